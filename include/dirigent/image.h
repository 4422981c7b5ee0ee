/*
 * image.h: image references as functions are registered with (DESIGN.md §6).
 * The forms the cluster's runtimes understand:
 *
 *   /abs/path/to/executable        the process runtime's command
 *   host[:port]/name[:tag|@digest] a registry (docker:// implied; also name:tag)
 *   docker://host[:port]/name...   the same, in skopeo's transport form
 *   oci:PATH[:TAG]                 an OCI image layout on the worker
 *   oci-archive:PATH[:TAG]         a tar of one
 *   docker-archive:PATH[:REF]      a `docker save` tar
 *
 * Parsing is pure: the CP validates at registration, the worker turns the
 * reference into skopeo's source argument.
 */
#ifndef DIRIGENT_IMAGE_H
#define DIRIGENT_IMAGE_H

#include <stdbool.h>

#include "dirigent/common.h"

#define DG_IMAGE_REF_MAX 1024

enum dg_image_kind {
    DG_IMAGE_PATH,           /* an absolute path: the process runtime */
    DG_IMAGE_REGISTRY,       /* docker:// */
    DG_IMAGE_OCI_LAYOUT,     /* oci: */
    DG_IMAGE_OCI_ARCHIVE,    /* oci-archive: */
    DG_IMAGE_DOCKER_ARCHIVE, /* docker-archive: */
};

struct dg_image_ref {
    enum dg_image_kind kind;
    /* skopeo's source ("docker://...", "oci:..."), or the path */
    char source[DG_IMAGE_REF_MAX + 32];
    char registry[256]; /* registry refs: host[:port] ("" = docker.io) */
};

/* Parse `s`; on error `err` says what is wrong with it ("expected ..., got ..."). */
int dg_image_ref_parse(const char *s, struct dg_image_ref *out, struct dg_err *err);

/* True for registries on this machine (localhost, 127.0.0.0/8, [::1]), which are reached
 * without TLS, as Docker does. */
bool dg_image_registry_is_local(const char *registry);

#endif
