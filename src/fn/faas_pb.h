/* faas_pb.h: the codec moved to the shared library (include/dirigent/faas_pb.h) so that
 * dirigent load and dirigent-fn share it; this name stays for src/fn's includes. */
#include "dirigent/faas_pb.h"
