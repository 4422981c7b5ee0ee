/* faas_pb.h: the two messages of InVitro's faas.Executor, in protobuf's wire format. */
#include "faas_pb.h"

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

int faas_request_decode(const uint8_t *p, size_t len, struct faas_request *out, const char **err)
{
    memset(out, 0, sizeof(*out));
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
                out->runtime_ms = (uint32_t)v;
            else if (field == 3)
                out->memory_mib = (uint32_t)v;
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
                out->message = p + i;
                out->message_len = (size_t)v;
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

size_t faas_reply_encode(const struct faas_reply *r, uint8_t *out, size_t cap)
{
    if (cap < r->message_len + 3 * 11)
        return 0;
    size_t n = 0;
    if (r->message_len) {
        out[n++] = (1 << 3) | 2;
        n += put_varint(out + n, r->message_len);
        memcpy(out + n, r->message, r->message_len);
        n += r->message_len;
    }
    if (r->duration_us) {
        out[n++] = (2 << 3) | 0;
        n += put_varint(out + n, r->duration_us);
    }
    if (r->memory_kb) {
        out[n++] = (3 << 3) | 0;
        n += put_varint(out + n, r->memory_kb);
    }
    return n;
}
