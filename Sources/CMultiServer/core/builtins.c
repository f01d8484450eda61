/*
 * The protocols built into the library, registered by ms_new() in this order
 * (each with the ms_t as pdata) and known to ms_address_check(). A new
 * built-in is one line here and one `extern` in internal.h.
 */
#include "internal.h"

const ms_protocol_t *const ms__builtins[] = {
    &ms__proto_net,
    &ms__proto_unix,
    &ms__proto_noauth,
    &ms__proto_shs,
    &ms__proto_noise,
    &ms__proto_gzip,
    &ms__proto_onion,
    &ms__proto_tls,
    &ms__proto_ws,
    &ms__proto_wss,
    NULL,
};
