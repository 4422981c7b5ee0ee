/* faas_pb.h: the two messages of InVitro's faas.Executor, in protobuf's wire format. */
#include "dirigent/faas_pb.h"

#include <string.h>

static int varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= len)
            return -1;
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* Both messages have the same shape: string 1, uint32 2, uint32 3. */
static int decode3(const uint8_t *p, size_t len, const uint8_t **msg, size_t *msg_len, uint32_t *f2,
                   uint32_t *f3, const char **err)
{
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (varint(p, len, &i, &key) < 0 || (key >> 3) == 0) {
            *err = "a bad field key";
            return -1;
        }
        unsigned field = (unsigned)(key >> 3), type = (unsigned)(key & 7);
        switch (type) {
        case 0: /* varint */
            if (varint(p, len, &i, &v) < 0) {
                *err = "a truncated varint";
                return -1;
            }
            if (field == 2)
                *f2 = (uint32_t)v;
            else if (field == 3)
                *f3 = (uint32_t)v;
            break;
        case 1: /* fixed64 */
        case 5: /* fixed32 */
            if (len - i < (type == 1 ? 8u : 4u)) {
                *err = "a truncated fixed-size field";
                return -1;
            }
            i += type == 1 ? 8 : 4;
            break;
        case 2: /* length-delimited */
            if (varint(p, len, &i, &v) < 0 || v > len - i) {
                *err = "a length-delimited field longer than the message";
                return -1;
            }
            if (field == 1) {
                *msg = p + i;
                *msg_len = (size_t)v;
            }
            i += (size_t)v;
            break;
        default:
            *err = "an unsupported wire type";
            return -1;
        }
        if ((field == 1 && type != 2) || ((field == 2 || field == 3) && type != 0)) {
            *err = field == 1 ? "field 1 (message) is not a string"
                              : "fields 2 and 3 (runtimeInMilliSec, memoryInMebiBytes) must be "
                                "varints";
            return -1;
        }
    }
    return 0;
}

int faas_request_decode(const uint8_t *p, size_t len, struct faas_request *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    return decode3(p, len, &out->message, &out->message_len, &out->runtime_ms, &out->memory_mib,
                   err);
}

int faas_reply_decode(const uint8_t *p, size_t len, struct faas_reply *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    const uint8_t *msg = NULL;
    int rc = decode3(p, len, &msg, &out->message_len, &out->duration_us, &out->memory_kb, err);
    out->message = msg ? (const char *)msg : "";
    return rc;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

static size_t encode3(const void *msg, size_t msg_len, uint32_t f2, uint32_t f3, uint8_t *out,
                      size_t cap)
{
    if (cap < msg_len + 3 * 11)
        return 0;
    size_t n = 0;
    if (msg_len) {
        out[n++] = (1 << 3) | 2;
        n += put_varint(out + n, msg_len);
        memcpy(out + n, msg, msg_len);
        n += msg_len;
    }
    if (f2) {
        out[n++] = (2 << 3) | 0;
        n += put_varint(out + n, f2);
    }
    if (f3) {
        out[n++] = (3 << 3) | 0;
        n += put_varint(out + n, f3);
    }
    return n;
}

size_t faas_reply_encode(const struct faas_reply *r, uint8_t *out, size_t cap)
{
    return encode3(r->message, r->message_len, r->duration_us, r->memory_kb, out, cap);
}

size_t faas_request_encode(const struct faas_request *r, uint8_t *out, size_t cap)
{
    return encode3(r->message, r->message_len, r->runtime_ms, r->memory_mib, out, cap);
}
