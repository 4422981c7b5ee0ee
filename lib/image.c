/*
 * image.c: image references (image.h). The registry form follows the
 * reference grammar registries and skopeo use: an optional domain (a first
 * component with a '.' or a ':' or "localhost"), lowercase path components
 * joined by '/', then ":tag" and/or "@algorithm:hex".
 */
#include "dirigent/image.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* [a-z0-9]+ ( ( [_.] | __ | [-]* ) [a-z0-9]+ )* */
static bool path_component_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    while (i < n) {
        if (is_lower_alnum(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !is_lower_alnum(s[j]))
            j++;
        size_t seplen = j - i;
        bool dashes = true;
        for (size_t k = i; k < j; k++)
            dashes &= s[k] == '-';
        if (!dashes && !(seplen == 1 && (s[i] == '.' || s[i] == '_')) &&
            !(seplen == 2 && s[i] == '_' && s[i + 1] == '_'))
            return false;
        i = j;
    }
    return true;
}

/* domain-component ('.' domain-component)* (':' port)?, or [IPv6]:port */
static bool domain_ok(const char *s, size_t n)
{
    size_t end = n;
    const char *colon = memchr(s, ':', n);
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        for (const char *p = s + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':')
                return false;
        colon = close + 1 < s + n ? close + 1 : NULL;
        if (colon && *colon != ':')
            return false;
    } else {
        if (colon)
            end = (size_t)(colon - s);
        size_t start = 0;
        for (size_t i = 0; i <= end; i++) {
            if (i < end && s[i] != '.')
                continue;
            size_t len = i - start;
            if (len == 0 || !isalnum((unsigned char)s[start]) || !isalnum((unsigned char)s[i - 1]))
                return false;
            for (size_t k = start; k < i; k++)
                if (!isalnum((unsigned char)s[k]) && s[k] != '-')
                    return false;
            start = i + 1;
        }
    }
    if (colon) {
        size_t plen = (size_t)(s + n - colon - 1);
        if (plen == 0 || plen > 5)
            return false;
        for (size_t k = 1; k <= plen; k++)
            if (!isdigit((unsigned char)colon[k]))
                return false;
    }
    return true;
}

static bool tag_ok(const char *s, size_t n)
{
    if (n == 0 || n > 128 || !(isalnum((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static bool digest_ok(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return false;
    for (const char *p = s; p < colon; p++)
        if (!is_lower_alnum(*p) && !strchr("+._-", *p))
            return false;
    size_t hex = strlen(colon + 1);
    if (hex < 32)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (!isxdigit((unsigned char)*p))
            return false;
    return true;
}

static int parse_registry(const char *ref, struct dg_image_ref *out, struct dg_err *err)
{
    char name[DG_IMAGE_REF_MAX + 1];
    snprintf(name, sizeof(name), "%s", ref);
    char *at = strchr(name, '@');
    if (at) {
        *at = '\0';
        if (!digest_ok(at + 1))
            return dg_err_set(err, DG_E_INVAL,
                              "expected a digest ALGORITHM:HEX (sha256:<64 hex digits>) after "
                              "'@', got '%.80s'",
                              at + 1);
    }
    /* a ':' after the last '/' starts the tag (an earlier one is the registry's port) */
    char *slash = strrchr(name, '/');
    char *colon = strchr(slash ? slash : name, ':');
    if (colon) {
        *colon = '\0';
        if (!tag_ok(colon + 1, strlen(colon + 1)))
            return dg_err_set(err, DG_E_INVAL,
                              "expected a tag of letters, digits, '_', '.' and '-' (up to 128, "
                              "not starting with '.' or '-'), got '%.80s'",
                              colon + 1);
    }
    const char *path = name;
    out->registry[0] = '\0';
    char *first = strchr(name, '/');
    if (first &&
        (memchr(name, '.', (size_t)(first - name)) || memchr(name, ':', (size_t)(first - name)) ||
         strncmp(name, "localhost/", 10) == 0 || name[0] == '[')) {
        size_t dlen = (size_t)(first - name);
        if (!domain_ok(name, dlen) || dlen >= sizeof(out->registry))
            return dg_err_set(err, DG_E_INVAL, "expected a registry host[:port], got '%.*s'",
                              (int)DG_MIN(dlen, 80), name);
        memcpy(out->registry, name, dlen);
        out->registry[dlen] = '\0';
        path = first + 1;
    }
    if (strlen(name) > 255)
        return dg_err_set(err, DG_E_INVAL, "the repository name is longer than 255 characters");
    for (const char *p = path;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!path_component_ok(p, n))
            return dg_err_set(err, DG_E_INVAL,
                              "expected a repository name of lowercase letters, digits and "
                              "separators ('.', '_', '__', '-') between '/', got '%.*s'",
                              (int)DG_MIN(n, 80), p);
        if (!e)
            break;
        p = e + 1;
    }
    out->kind = DG_IMAGE_REGISTRY;
    snprintf(out->source, sizeof(out->source), "docker://%s", ref);
    return 0;
}

int dg_image_ref_parse(const char *s, struct dg_image_ref *out, struct dg_err *err)
{
    static const struct {
        const char *prefix;
        enum dg_image_kind kind;
    } transports[] = {
        {"oci:", DG_IMAGE_OCI_LAYOUT},
        {"oci-archive:", DG_IMAGE_OCI_ARCHIVE},
        {"docker-archive:", DG_IMAGE_DOCKER_ARCHIVE},
    };
    memset(out, 0, sizeof(*out));
    size_t n = strlen(s);
    if (n == 0)
        return dg_err_set(err, DG_E_INVAL, "expected an image reference, got ''");
    if (n > DG_IMAGE_REF_MAX)
        return dg_err_set(err, DG_E_INVAL, "longer than %d characters", DG_IMAGE_REF_MAX);
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]))
            return dg_err_set(err, DG_E_INVAL,
                              "expected no spaces or control characters, got '%.80s'", s);
    if (s[0] == '/') {
        out->kind = DG_IMAGE_PATH;
        snprintf(out->source, sizeof(out->source), "%s", s);
        return 0;
    }
    if (strncmp(s, "docker://", 9) == 0)
        return parse_registry(s + 9, out, err);
    for (size_t i = 0; i < DG_ARRAY_LEN(transports); i++) {
        size_t plen = strlen(transports[i].prefix);
        if (strncmp(s, transports[i].prefix, plen) != 0)
            continue;
        if (s[plen] == '\0' || s[plen] == ':')
            return dg_err_set(err, DG_E_INVAL, "expected %sPATH[:TAG], got '%.80s'",
                              transports[i].prefix, s);
        out->kind = transports[i].kind;
        snprintf(out->source, sizeof(out->source), "%s", s);
        return 0;
    }
    /* "dir:/x", "containers-storage:..." or "https://...": a transport this runtime lacks */
    const char *colon = strchr(s, ':');
    const char *slash = strchr(s, '/');
    if (colon && colon[1] == '/' && (!slash || colon < slash))
        return dg_err_set(err, DG_E_INVAL,
                          "unknown transport '%.*s:': expected a registry reference "
                          "(host[:port]/name[:tag]), docker://, oci:, oci-archive: or "
                          "docker-archive:",
                          (int)DG_MIN((size_t)(colon - s), 40), s);
    return parse_registry(s, out, err);
}

bool dg_image_registry_is_local(const char *registry)
{
    size_t n = strcspn(registry, ":");
    if (registry[0] == '[')
        return strncmp(registry, "[::1]", 5) == 0 && (registry[5] == '\0' || registry[5] == ':');
    if (n == 9 && strncmp(registry, "localhost", 9) == 0)
        return true;
    /* 127.0.0.0/8 as an address by its form alone, no resolver asked: "127.example.com",
     * 127.0.0.256 or 127.0.0.0001 are names skopeo would look up */
    char host[INET_ADDRSTRLEN];
    struct in_addr a;
    if (n >= sizeof(host))
        return false;
    memcpy(host, registry, n);
    host[n] = '\0';
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}
