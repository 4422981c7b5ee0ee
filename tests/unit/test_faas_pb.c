/*
 * test_faas_pb.c: dirigent-fn's hand-written codec of InVitro's FaasRequest/FaasReply
 * (lib/faas_pb.c, shared with dirigent load) against bytes worked out from protobuf's wire format by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dirigent/faas_pb.h"

static void test_decode_request(void **state)
{
    /* {message: "hi", runtimeInMilliSec: 150, memoryInMebiBytes: 128} */
    static const uint8_t in[] = {0x0a, 0x02, 'h', 'i', 0x10, 0x96, 0x01, 0x18, 0x80, 0x01};
    struct faas_request r;
    const char *err = NULL;
    assert_int_equal(faas_request_decode(in, sizeof(in), &r, &err), 0);
    assert_int_equal(r.runtime_ms, 150);
    assert_int_equal(r.memory_mib, 128);
    assert_int_equal(r.message_len, 2);
    assert_memory_equal(r.message, "hi", 2);
    /* the empty message: all defaults */
    assert_int_equal(faas_request_decode(in, 0, &r, &err), 0);
    assert_int_equal(r.runtime_ms, 0);
    assert_int_equal(r.memory_mib, 0);
}

static void test_decode_skips_unknown(void **state)
{
    /* field 9 varint, 10 fixed32, 11 bytes, runtime 7 then 1 (the last wins), 12 fixed64 */
    static const uint8_t in[] = {0x48, 0x05, 0x55, 1, 2, 3, 4, 0x5a, 0x01, 0xff, 0x10, 0x07,
                                 0x10, 0x01, 0x61, 0, 0, 0, 0, 0,    0,    0,    0};
    struct faas_request r;
    const char *err = NULL;
    assert_int_equal(faas_request_decode(in, sizeof(in), &r, &err), 0);
    assert_int_equal(r.runtime_ms, 1);
}

static void test_decode_errors(void **state)
{
    struct faas_request r;
    const char *err = NULL;
    static const uint8_t trunc_varint[] = {0x10, 0x96};
    assert_int_equal(faas_request_decode(trunc_varint, sizeof(trunc_varint), &r, &err), -1);
    assert_string_equal(err, "a truncated varint");
    static const uint8_t long_string[] = {0x0a, 0x05, 'h', 'i'};
    assert_int_equal(faas_request_decode(long_string, sizeof(long_string), &r, &err), -1);
    assert_string_equal(err, "a length-delimited field longer than the message");
    static const uint8_t wrong_type[] = {0x12, 0x00}; /* field 2 as bytes */
    assert_int_equal(faas_request_decode(wrong_type, sizeof(wrong_type), &r, &err), -1);
    static const uint8_t group[] = {0x13}; /* wire type 3 (start group) */
    assert_int_equal(faas_request_decode(group, sizeof(group), &r, &err), -1);
    assert_string_equal(err, "an unsupported wire type");
    static const uint8_t field0[] = {0x00, 0x01};
    assert_int_equal(faas_request_decode(field0, sizeof(field0), &r, &err), -1);
}

static void test_encode_reply(void **state)
{
    /* {message: "OK - vm", durationInMicroSec: 20003, memoryUsageInKb: 131072} */
    static const uint8_t want[] = {0x0a, 0x07, 'O',  'K',  ' ',  '-',  ' ',  'v', 'm',
                                   0x10, 0xa3, 0x9c, 0x01, 0x18, 0x80, 0x80, 0x08};
    struct faas_reply rep = {"OK - vm", 7, 20003, 131072};
    uint8_t out[64];
    size_t n = faas_reply_encode(&rep, out, sizeof(out));
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, n);
    /* zero values are not written (proto3) */
    struct faas_reply zero = {"", 0, 0, 0};
    assert_int_equal(faas_reply_encode(&zero, out, sizeof(out)), 0);
    /* too small a buffer */
    assert_int_equal(faas_reply_encode(&rep, out, 8), 0);
}

static void test_client_side(void **state)
{
    /* dirigent load's request: the bytes test_decode_request decodes */
    static const uint8_t want[] = {0x0a, 0x02, 'h', 'i', 0x10, 0x96, 0x01, 0x18, 0x80, 0x01};
    struct faas_request rq = {(const uint8_t *)"hi", 2, 150, 128};
    uint8_t out[64];
    size_t n = faas_request_encode(&rq, out, sizeof(out));
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, n);
    /* and the reply test_encode_reply encodes, read back */
    static const uint8_t rep[] = {0x0a, 0x07, 'O',  'K',  ' ',  '-',  ' ',  'v', 'm',
                                  0x10, 0xa3, 0x9c, 0x01, 0x18, 0x80, 0x80, 0x08};
    struct faas_reply r;
    const char *err = NULL;
    assert_int_equal(faas_reply_decode(rep, sizeof(rep), &r, &err), 0);
    assert_int_equal(r.message_len, 7);
    assert_memory_equal(r.message, "OK - vm", 7);
    assert_int_equal(r.duration_us, 20003);
    assert_int_equal(r.memory_kb, 131072);
    assert_int_equal(faas_reply_decode(rep, 5, &r, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_request), cmocka_unit_test(test_decode_skips_unknown),
        cmocka_unit_test(test_decode_errors),  cmocka_unit_test(test_encode_reply),
        cmocka_unit_test(test_client_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
