/* scaffold, replaced by the real bindings */
#include "lbind.h"
void lada_open_io(lua_State *L) { (void)L; }
