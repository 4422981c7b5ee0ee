/*
 * firewall.c: the nftables tables of firewall.h, loaded with nft(8) (package nftables).
 *
 * What a sandbox's packets meet (iif: the worker's bridge; the veths are its ports):
 *
 *   inet  input    to any address of this host (the node's, the gateway's, 0.0.0.0
 *                  listeners, the worker's API): only replies to connections the host
 *                  opened (the data plane's and the probes' calls into the sandbox); the rest
 *                  is dropped. Nothing in a sandbox needs to open a connection to the host.
 *   inet  forward  routed through the host: replies pass; to the bridge again (another
 *                  sandbox through the gateway) dropped; to sandboxEgressAllow accepted;
 *                  then with sandboxEgress none everything is dropped, with internet the
 *                  private and special ranges (other workers' sandboxes, cluster and node
 *                  networks, link-local metadata services) and IPv6 are dropped and the rest
 *                  passes.
 *   bridge forward from one veth of ours to another: dropped (sandboxes never see each
 *                  other on the bridge either).
 *
 * Our chains accept by default, so they never let through what another table drops; a drop
 * here is final. The table is named from the worker's instance: two workers on one host
 * never touch each other's.
 */
#include "firewall.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"

/* Never reachable with sandboxEgress internet (unless in sandboxEgressAllow): RFC 6890's
 * private and special-purpose ranges, where cluster nodes, other sandboxes and cloud metadata
 * services live. */
static const char *const private4[] = {
    "0.0.0.0/8",       "10.0.0.0/8",     "100.64.0.0/10", "127.0.0.0/8",    "169.254.0.0/16",
    "172.16.0.0/12",   "192.0.0.0/24",   "192.0.2.0/24",  "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
};

/* a.b.c.d or a.b.c.d/len, canonical (host bits zero) into out */
static int cidr_ok(const char *s, char *out, size_t len)
{
    char a[32];
    unsigned plen = 32;
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(a))
        return -1;
    memcpy(a, s, n);
    a[n] = '\0';
    if (slash) {
        char *end;
        unsigned long v = strtoul(slash + 1, &end, 10);
        if (!slash[1] || *end || v > 32)
            return -1;
        plen = (unsigned)v;
    }
    struct in_addr in;
    if (inet_pton(AF_INET, a, &in) != 1)
        return -1;
    uint32_t h = ntohl(in.s_addr);
    uint32_t mask = plen ? 0xffffffffu << (32 - plen) : 0;
    if (h & ~mask)
        return -1;
    snprintf(out, len, "%s/%u", a, plen);
    return 0;
}

DG_PRINTF(3, 4) static void put(char *buf, size_t len, const char *fmt, ...)
{
    size_t off = strlen(buf);
    if (off >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + off, len - off, fmt, ap);
    va_end(ap);
}

/* An interface or table name nft takes quoted as it is: letters, digits, - _ . only. */
static bool name_ok(const char *s)
{
    if (!s || !s[0] || strlen(s) > 31)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

int wk_firewall_ruleset(const struct wk_fw_opts *o, char *buf, size_t len, struct dg_err *err)
{
    if (!name_ok(o->bridge) || !name_ok(o->prefix) || !name_ok(o->table))
        return dg_err_set(err, DG_E_INVAL,
                          "bridge '%s': expected letters, digits, '-', '_' or '.' only",
                          o->bridge ? o->bridge : "");
    bool internet;
    if (strcmp(o->egress, "none") == 0)
        internet = false;
    else if (strcmp(o->egress, "internet") == 0)
        internet = true;
    else
        return dg_err_set(err, DG_E_INVAL,
                          "sandboxEgress '%s': must be none (sandboxes reach only "
                          "sandboxEgressAllow) or internet (also public addresses)",
                          o->egress);
    buf[0] = '\0';
    const char *t = o->table, *br = o->bridge;
    /* add + delete: a predecessor's table (a crash) goes in the same transaction */
    put(buf, len, "add table inet %s\ndelete table inet %s\n", t, t);
    put(buf, len, "add table bridge %s\ndelete table bridge %s\n", t, t);
    put(buf, len, "table inet %s {\n", t);
    size_t nallow = o->allow ? o->allow->n : 0;
    if (nallow) {
        put(buf, len, "  set allow4 {\n    type ipv4_addr; flags interval;\n    elements = { ");
        for (size_t i = 0; i < nallow; i++) {
            char c[64];
            if (cidr_ok(o->allow->v[i], c, sizeof(c)) < 0)
                return dg_err_set(err, DG_E_INVAL,
                                  "sandboxEgressAllow '%s': not an IPv4 address or CIDR with "
                                  "its host bits zero (e.g. 192.0.2.7 or 198.51.100.0/24)",
                                  o->allow->v[i]);
            put(buf, len, "%s%s", i ? ", " : "", c);
        }
        put(buf, len, " }\n  }\n");
    }
    if (internet) {
        put(buf, len, "  set private4 {\n    type ipv4_addr; flags interval;\n    elements = { ");
        for (size_t i = 0; i < DG_ARRAY_LEN(private4); i++)
            put(buf, len, "%s%s", i ? ", " : "", private4[i]);
        put(buf, len, " }\n  }\n");
    }
    put(buf, len,
        "  chain input {\n"
        "    type filter hook input priority filter - 10; policy accept;\n"
        "    iifname \"%s\" ct state established,related accept\n"
        "    iifname \"%s\" counter drop comment \"sandbox to host\"\n"
        "  }\n",
        br, br);
    put(buf, len,
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        "    iifname \"%s\" ct state established,related accept\n"
        "    iifname \"%s\" oifname \"%s\" counter drop comment \"sandbox to sandbox\"\n",
        br, br, br);
    if (nallow)
        put(buf, len, "    iifname \"%s\" ip daddr @allow4 accept\n", br);
    if (internet)
        put(buf, len,
            "    iifname \"%s\" meta nfproto ipv6 counter drop\n"
            "    iifname \"%s\" ip daddr @private4 counter drop comment \"sandbox to private\"\n",
            br, br);
    else
        put(buf, len, "    iifname \"%s\" counter drop comment \"sandbox egress none\"\n", br);
    put(buf, len, "  }\n}\n");
    put(buf, len,
        "table bridge %s {\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        "    iifname \"%s*\" oifname \"%s*\" counter drop comment \"sandbox to sandbox\"\n"
        "  }\n}\n",
        t, o->prefix, o->prefix);
    if (strlen(buf) + 1 >= len)
        return dg_err_set(err, DG_E_INVAL, "sandboxEgressAllow: too many entries");
    return 0;
}

int wk_firewall_install(const struct wk_fw_opts *o, const char *path, struct dg_err *err)
{
    char rules[65536];
    if (wk_firewall_ruleset(o, rules, sizeof(rules), err) < 0)
        return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return dg_err_set(err, DG_E_INVAL, "open %s: %m", path);
    size_t n = strlen(rules);
    ssize_t w = write(fd, rules, n);
    close(fd);
    if (w != (ssize_t)n)
        return dg_err_set(err, DG_E_INVAL, "write %s: %m", path);
    char *argv[] = {"nft", "-f", (char *)path, NULL};
    int rc = wk_run_sync(argv, NULL, 0);
    unlink(path);
    if (rc != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "nft -f %s failed (status %d): sandboxes cannot be confined without "
                          "nftables (apt-get install nftables; the kernel needs nf_tables)",
                          path, rc);
    return 0;
}

int wk_firewall_remove(const char *table)
{
    char *inet[] = {"nft", "delete", "table", "inet", (char *)table, NULL};
    char *bridge[] = {"nft", "delete", "table", "bridge", (char *)table, NULL};
    char out[256];
    int a = wk_run_sync(inet, out, sizeof(out));
    int b = wk_run_sync(bridge, out, sizeof(out));
    return a == 0 && b == 0 ? 0 : -1;
}
