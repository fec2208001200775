/* scaffold, replaced by the real bindings */
#include "lbind.h"
void lada_open_layout(lua_State *L) { (void)L; }
struct ada_layout *lada_check_layout(lua_State *L, int idx, const char *fname, const char *argname) {
  lada_error(L, fname, "%s: layouts are not built yet", argname);
  return NULL;
}
