-- busted output handler: one character per test while running (on stderr), then the details of
-- every failure and error, then exactly one line "N passed, N failed, N skipped" (errors count
-- as failed, pending as skipped).
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.base"()

  local marks = {success = ".", failure = "F", error = "E", pending = "s"}

  handler.testEnd = function(element, parent, status)
    io.stderr:write(marks[status] or "?")
    io.stderr:flush()
    return nil, true
  end

  local function describe(item, kind)
    local t = item.element and item.element.trace or item.trace
    local where = t and t.short_src and (t.short_src .. ":" .. tostring(t.currentline)) or "?"
    local msg = item.message
    if type(msg) ~= "string" then msg = require("pl.pretty").write(msg) end
    return string.format("%s: %s\n  at %s\n  %s", kind, item.name or "?", where, tostring(msg):gsub("\n", "\n  "))
  end

  handler.suiteEnd = function()
    io.stderr:write("\n")
    for _, f in ipairs(handler.failures) do io.write(describe(f, "FAILED"), "\n\n") end
    for _, e in ipairs(handler.errors) do io.write(describe(e, "ERROR"), "\n\n") end
    if options.verbose then
      for _, p in ipairs(handler.pendings) do io.write("skipped: ", p.name, " (", tostring(p.message), ")\n") end
    end
    io.write(string.format("%d passed, %d failed, %d skipped\n", handler.successesCount,
      handler.failuresCount + handler.errorsCount, handler.pendingsCount))
    io.flush()
    return nil, true
  end

  busted.subscribe({"test", "end"}, handler.testEnd, {predicate = handler.cancelOnPending})
  busted.subscribe({"suite", "end"}, handler.suiteEnd)
  return handler
end
