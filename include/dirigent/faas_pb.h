/*
 * faas_pb.h: InVitro's gRPC messages (package faas, pkg/workload/proto/faas.proto), hand-encoded:
 *   FaasRequest { string message = 1; uint32 runtimeInMilliSec = 2; uint32 memoryInMebiBytes = 3; }
 *   FaasReply   { string message = 1; uint32 durationInMicroSec = 2; uint32 memoryUsageInKb = 3; }
 * Proto3 wire format: unknown fields are skipped, a repeated scalar keeps its last value, a
 * uint32 takes the low 32 bits of its varint, zero values are not written.
 */
#ifndef DIRIGENT_FAAS_PB_H
#define DIRIGENT_FAAS_PB_H

#include <stddef.h>
#include <stdint.h>

struct faas_request {
    const uint8_t *message; /* a view into the input */
    size_t message_len;
    uint32_t runtime_ms, memory_mib;
};

struct faas_reply {
    const char *message;
    size_t message_len;
    uint32_t duration_us, memory_kb;
};

/* 0, or -1 with *err naming what is malformed. */
int faas_request_decode(const uint8_t *p, size_t len, struct faas_request *out, const char **err);

/* Bytes written to `out` (at most `cap`); 0 when `cap` is too small. */
size_t faas_reply_encode(const struct faas_reply *r, uint8_t *out, size_t cap);

/* The client's side (dirigent load --protocol grpc): a FaasRequest into `out` (bytes written,
 * 0 when `cap` is too small; the empty message is 0 bytes too, which is then valid), and a
 * FaasReply read back (message: a view into `p`; 0, or -1 with *err). */
size_t faas_request_encode(const struct faas_request *r, uint8_t *out, size_t cap);
int faas_reply_decode(const uint8_t *p, size_t len, struct faas_reply *out, const char **err);

#endif
