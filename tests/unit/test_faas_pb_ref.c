/*
 * test_faas_pb_ref.c: the hand-written codec of InVitro's FaasRequest/FaasReply (faas_pb.h)
 * against protobuf-c's, generated from tests/unit/proto/faas_check.proto: for a spread of
 * values (zero, one-byte and five-byte varints, the uint32 limits, empty, short and long
 * messages, every field alone) our reply encoder writes exactly protobuf-c's bytes, protobuf-c
 * reads them back, and our request decoder reads what protobuf-c packs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "faas_check.pb-c.h"
#include "dirigent/faas_pb.h"

static const uint32_t nums[] = {0,     1,       127,         128,         150,        16383,
                                16384, 1000000, 0x7fffffffu, 0x80000000u, 0xffffffffu};
static char long_text[3000];
static const char *texts[] = {"", "hi", "OK - fn-7f3a", long_text};

static void test_reply_bytes_as_protobuf_c(void **state)
{
    memset(long_text, 'x', sizeof(long_text) - 1);
    unsigned cases = 0;
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
        for (size_t a = 0; a < sizeof(nums) / sizeof(nums[0]); a++)
            for (size_t b = 0; b < sizeof(nums) / sizeof(nums[0]); b++) {
                Faas__FaasReply ref = FAAS__FAAS_REPLY__INIT;
                ref.message = (char *)texts[t];
                ref.durationinmicrosec = nums[a];
                ref.memoryusageinkb = nums[b];
                uint8_t want[4096], got[4096];
                size_t wn = faas__faas_reply__pack(&ref, want);
                assert_int_equal(wn, faas__faas_reply__get_packed_size(&ref));
                struct faas_reply ours = {.message = texts[t],
                                          .message_len = strlen(texts[t]),
                                          .duration_us = nums[a],
                                          .memory_kb = nums[b]};
                size_t gn = faas_reply_encode(&ours, got, sizeof(got));
                assert_int_equal(gn, wn);
                assert_memory_equal(got, want, wn);
                /* and protobuf-c reads ours back to the same values */
                Faas__FaasReply *back = faas__faas_reply__unpack(NULL, gn, got);
                assert_non_null(back);
                assert_string_equal(back->message, texts[t]);
                assert_int_equal(back->durationinmicrosec, nums[a]);
                assert_int_equal(back->memoryusageinkb, nums[b]);
                faas__faas_reply__free_unpacked(back, NULL);
                cases++;
            }
    assert_int_equal(cases, 4 * 11 * 11);
}

static void test_request_from_protobuf_c(void **state)
{
    memset(long_text, 'x', sizeof(long_text) - 1);
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
        for (size_t a = 0; a < sizeof(nums) / sizeof(nums[0]); a++)
            for (size_t b = 0; b < sizeof(nums) / sizeof(nums[0]); b++) {
                Faas__FaasRequest ref = FAAS__FAAS_REQUEST__INIT;
                ref.message = (char *)texts[t];
                ref.runtimeinmillisec = nums[a];
                ref.memoryinmebibytes = nums[b];
                uint8_t buf[4096];
                size_t n = faas__faas_request__pack(&ref, buf);
                struct faas_request r;
                const char *err = NULL;
                assert_int_equal(faas_request_decode(buf, n, &r, &err), 0);
                assert_int_equal(r.runtime_ms, nums[a]);
                assert_int_equal(r.memory_mib, nums[b]);
                assert_int_equal(r.message_len, strlen(texts[t]));
                assert_memory_equal(r.message, texts[t], r.message_len);
                /* dirigent load's side: our request encodes to protobuf-c's bytes, and a
                 * reply protobuf-c packs decodes to its values */
                uint8_t mine[4096];
                size_t mn = faas_request_encode(&r, mine, sizeof(mine));
                assert_int_equal(mn, n);
                assert_memory_equal(mine, buf, n);
                Faas__FaasReply rep = FAAS__FAAS_REPLY__INIT;
                rep.message = (char *)texts[t];
                rep.durationinmicrosec = nums[a];
                rep.memoryusageinkb = nums[b];
                n = faas__faas_reply__pack(&rep, buf);
                struct faas_reply back;
                assert_int_equal(faas_reply_decode(buf, n, &back, &err), 0);
                assert_int_equal(back.duration_us, nums[a]);
                assert_int_equal(back.memory_kb, nums[b]);
                assert_int_equal(back.message_len, strlen(texts[t]));
                assert_memory_equal(back.message, texts[t], back.message_len);
            }
}

/* What protobuf-c refuses (cut varints, lengths past the end), ours refuses too. */
static void test_refuses_what_protobuf_c_refuses(void **state)
{
    Faas__FaasRequest ref = FAAS__FAAS_REQUEST__INIT;
    ref.message = "hello";
    ref.runtimeinmillisec = 300000;
    ref.memoryinmebibytes = 512;
    uint8_t buf[64];
    size_t n = faas__faas_request__pack(&ref, buf);
    for (size_t cut = 1; cut < n; cut++) {
        Faas__FaasRequest *c = faas__faas_request__unpack(NULL, cut, buf);
        struct faas_request r;
        const char *err = NULL;
        int ours = faas_request_decode(buf, cut, &r, &err);
        if (c) { /* a cut at a field boundary is a valid, shorter message for both */
            assert_int_equal(ours, 0);
            assert_int_equal(r.runtime_ms, c->runtimeinmillisec);
            assert_int_equal(r.memory_mib, c->memoryinmebibytes);
            faas__faas_request__free_unpacked(c, NULL);
        } else {
            assert_int_equal(ours, -1);
            assert_non_null(err);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_bytes_as_protobuf_c),
        cmocka_unit_test(test_request_from_protobuf_c),
        cmocka_unit_test(test_refuses_what_protobuf_c_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
