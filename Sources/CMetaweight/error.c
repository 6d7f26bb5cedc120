// Thread-local last-error storage behind mw_last_error().
#include "metaweight.h"

#include <string.h>

static _Thread_local char mw_error_message[2048];

const char *mw_last_error(void) { return mw_error_message; }

void mw_set_last_error(const char *message) {
  if (message == NULL) {
    mw_error_message[0] = '\0';
    return;
  }
  strncpy(mw_error_message, message, sizeof(mw_error_message) - 1);
  mw_error_message[sizeof(mw_error_message) - 1] = '\0';
}
