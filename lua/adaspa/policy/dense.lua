-- adaspa.policy.dense: every step, every layer dense. The reference the others are measured by.
local dense = {}
dense.__index = dense

function dense.new() return setmetatable({name = "dense"}, dense) end
function dense:mode() return "dense" end
function dense:needs_lse() return false end
function dense:select() error("policy dense: select is never called (every step is dense)", 2) end
function dense:describe() return "dense" end

return dense
