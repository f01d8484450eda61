/* Private part of the address codec (address.c): views of one section for
 * the protocol hooks, and printing of a single section. */
#ifndef MS_ADDRESS_H
#define MS_ADDRESS_H

#include <stddef.h>

#include "multiserver.h"

/* Fill *out with a view of section sec of alternative alt. The name and the
 * fields/field_lens arrays belong to a and stay valid while a lives.
 * Returns 0, or MS_EINVAL if an index is out of range or an argument NULL. */
int ms__addr_section(const ms_addr_t *a, size_t alt, size_t sec,
                     ms_section_t *out);

/* Print one section canonically ("name" then ":field" for each field, each
 * field escaped with ms_addr_escape). snprintf semantics: returns the length
 * needed (excluding the NUL) and writes at most size bytes, NUL included. */
size_t ms__section_print(const ms_section_t *sec, char *buf, size_t size);

#endif /* MS_ADDRESS_H */
