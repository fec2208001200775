/* scaffold, replaced by the real bindings */
#include "lbind.h"
void lada_open_attention(lua_State *L) { (void)L; }
