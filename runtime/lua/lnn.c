/* scaffold, replaced by the real bindings */
#include "lbind.h"
void lada_open_nn(lua_State *L) { (void)L; }
