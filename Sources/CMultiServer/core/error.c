/* Error codes: ours (MS_ERRNO_MAP) and libuv's, one namespace. */
#include "internal.h"

const char *ms_strerror(int err) {
  switch (err) {
#define MS__ERR_MSG(name, val, msg) \
  case MS_##name:                   \
    return msg;
    MS_ERRNO_MAP(MS__ERR_MSG)
#undef MS__ERR_MSG
    default:
      break;
  }
  if (err == 0) return "success";
  return uv_strerror(err);
}

const char *ms_err_name(int err) {
  switch (err) {
#define MS__ERR_NAME(name, val, msg) \
  case MS_##name:                    \
    return "MS_" #name;
    MS_ERRNO_MAP(MS__ERR_NAME)
#undef MS__ERR_NAME
    default:
      break;
  }
  if (err == 0) return "OK";
  return uv_err_name(err);
}
