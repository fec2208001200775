-- The adaspa host: scripts, -e, subcommands, exit codes, error reports, the REPL through a pipe.

describe("the adaspa host", function()
  it("--version names the version and the backends", function()
    local out, err, code = spec_run("--version")
    assert.equal(0, code, err)
    assert.truthy(out:find("adaspa " .. adaspa.version, 1, true))
    assert.truthy(out:find("backends: cpu", 1, true))
    assert.equal("", err)
  end)

  it("runs a script with arg set like the standalone interpreter", function()
    local p = spec_tmpfile([[
      local t = adaspa.randn({4, 4}, {seed = 1})
      print(#arg, arg[1], arg[2], arg[0] ~= nil, select("#", ...))
      print(require("adaspa") == adaspa, t:numel())
    ]])
    local out, err, code = spec_run(p .. " one two")
    os.remove(p)
    assert.equal(0, code, err)
    assert.equal("2\tone\ttwo\ttrue\t2\ntrue\t16\n", out)
  end)

  it("-e runs a chunk", function()
    local out, err, code = spec_run([[-e "print(adaspa.zeros({2,3}):numel())"]])
    assert.equal(0, code, err)
    assert.equal("6\n", out)
  end)

  it("a runtime error reports file and line on stderr and exits 1", function()
    local p = spec_tmpfile("local x = 1\nlocal t = adaspa.zeros({2})\nt:narrow(1, 2, 5)\n")
    local out, err, code = spec_run(p)
    os.remove(p)
    assert.equal(1, code)
    assert.truthy(err:find(":3: t:narrow", 1, true), err)
    assert.truthy(err:find("out of range", 1, true), err)
  end)

  it("a syntax error reports file and line and exits 1", function()
    local p = spec_tmpfile("local x = = 2\n")
    local _, err, code = spec_run(p)
    os.remove(p)
    assert.equal(1, code)
    assert.truthy(err:find(":1:", 1, true), err)
  end)

  it("a missing file exits 1 with a message", function()
    local _, err, code = spec_run("/nonexistent/x.lua")
    assert.equal(1, code)
    assert.truthy(err:find("cannot open /nonexistent/x.lua", 1, true), err)
  end)

  it("an unknown command or option exits 1 and says what exists", function()
    local _, err, code = spec_run("frobnicate")
    assert.equal(1, code)
    assert.truthy(err:find("unknown command", 1, true), err)
    assert.truthy(err:find("devices", 1, true), err)
    local _, err2, code2 = spec_run("--frob")
    assert.equal(1, code2)
    assert.truthy(err2:find("unknown option", 1, true), err2)
  end)

  it("devices lists the CPU and the GPUs or why there are none", function()
    local out, err, code = spec_run("devices")
    assert.equal(0, code, err)
    assert.truthy(out:find("^cpu"), out)
    if adaspa.cuda.available() then
      assert.truthy(out:find("cuda:0", 1, true), out)
    else
      assert.truthy(out:find("gpu     none", 1, true), out)
    end
    assert.equal("", err)
  end)

  it("finds its Lua library through ADASPA_PATH", function()
    local f = io.popen("ADASPA_PATH=$PWD/lua " .. spec_bin .. [[ -e "print(package.path:match('^[^;]*'))" 2>&1]])
    local s = f:read("*a")
    f:close()
    assert.truthy(s:find("/lua/?.lua", 1, true), s)
  end)

  it("runs OpenMP with passive waiting unless the user chose a policy (and keeps its pid)", function()
    local probe = os.tmpname()
    local pf = assert(io.open(probe, "w"))
    pf:write("local f = io.open('/proc/self/stat')\nprint(os.getenv('OMP_WAIT_POLICY'), f:read('*l'):match('^%d+'))\n")
    pf:close()
    local function run(env)
      local f = io.popen("env -u OMP_WAIT_POLICY " .. env .. " sh -c 'echo $$; exec " .. spec_bin .. " " .. probe .. "' 2>&1")
      local s = f:read("*a")
      f:close()
      return s
    end
    local s = run("")
    local shell_pid, policy, pid = s:match("^(%d+)\n(%S+)%s+(%d+)")
    assert.equal("passive", policy, s)
    assert.equal(shell_pid, pid, s) -- exec, not a child: signals and launch's pids still reach it
    local s2 = run("OMP_WAIT_POLICY=active")
    os.remove(probe)
    assert.truthy(s2:find("\nactive", 1, true), s2)
  end)

  it("fails clearly when the Lua library cannot be found", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. " && cp " .. spec_bin .. " " .. dir .. "/adaspa") == 0)
    local f = io.popen("ADASPA_PATH= " .. dir .. "/adaspa -e 'print(1)' 2>&1; echo rc=$?")
    local s = f:read("*a")
    f:close()
    os.execute("rm -rf " .. dir)
    assert.truthy(s:find("cannot find the adaspa Lua library", 1, true), s)
    assert.truthy(s:find("rc=1", 1, true), s)
  end)
end)

describe("the REPL through a pipe", function()
  it("prints expression values", function()
    local out, err, code = spec_run("", "1+1\n")
    assert.equal(0, code, err)
    assert.equal("2\n", out)
  end)

  it("keeps state across lines and pretty-prints tensors", function()
    local out, err, code = spec_run("", "t = adaspa.full({2, 3}, 1.5)\nt\nt:sum()\n")
    assert.equal(0, code, err)
    assert.truthy(out:find("f32 [2, 3] cpu", 1, true), out)
    assert.truthy(out:find("1.5", 1, true), out)
    assert.truthy(out:find("9\n$"), out)
  end)

  it("asks for more on an incomplete chunk", function()
    local out, err, code = spec_run("", "for i = 1, 3 do\n  io.write(i, ' ')\nend\nprint('ok')\n")
    assert.equal(0, code, err)
    assert.equal("1 2 3 ok\n", out)
  end)

  it("prints an error and goes on; exits 1 at the end when piped input had errors", function()
    local out, err, code = spec_run("", "adaspa.randn('x')\nprint('still here')\n")
    assert.equal("still here\n", out)
    assert.truthy(err:find("adaspa.randn: shape must be a table", 1, true), err)
    assert.equal(1, code)
  end)

  it("prints tables and multiple values", function()
    local out, err, code = spec_run("", "{1, 2, a = 'x'}\n1, 'two'\n")
    assert.equal(0, code, err)
    assert.equal('{1, 2, a = "x"}\n1\ttwo\n', out)
  end)
end)

describe("the adaspa host: help, Ctrl-C and history (issue 11)", function()
  it("--help and help list every command; help COMMAND explains one; an unknown topic fails", function()
    for _, a in ipairs({"--help", "help"}) do
      local out, err, code = spec_run(a)
      assert.equal(0, code, err)
      for _, c in ipairs({"devices", "recipe FILE", "weights FILE", "help [COMMAND]", "--version", "Ctrl-C"}) do
        assert.truthy(out:find(c, 1, true), a .. ": " .. c .. "\n" .. out)
      end
    end
    local out, _, code = spec_run("help weights")
    assert.equal(0, code)
    assert.truthy(out:find("usage: adaspa weights FILE.safetensors", 1, true), out)
    local _, err, code2 = spec_run("help frobnicate")
    assert.equal(1, code2)
    assert.truthy(err:find("no help on frobnicate", 1, true), err)
  end)

  it("recipe NAME --help lists every field of the job with its value, default and meaning", function()
    local out, err, code = spec_run("recipe hunyuan --help")
    assert.equal(0, code, err)
    local video = require "adaspa.jobs.video"
    local n = 0
    local function walk(schema, prefix)
      for k, spec in pairs(schema) do
        if type(spec.type) == "string" then
          n = n + 1
          assert.truthy(out:find("\n  " .. prefix .. k .. " = ", 1, true), prefix .. k)
          assert.truthy(spec.doc and #spec.doc > 5, prefix .. k .. " has a doc string")
        else
          walk(spec, prefix .. k .. ".")
        end
      end
    end
    walk(video.schema, "")
    assert.is_true(n > 40)
    assert.truthy(out:find("sampler.steps = 50  [integer; default 50; set by the recipe]", 1, true), out)
    assert.truthy(out:find("sampler.guidance = 6", 1, true), out)
    assert.truthy(out:find("embedded guidance scale", 1, true), out)
    -- the other jobs' schemas are documented too
    for _, job in ipairs({"compare", "replay"}) do
      local o2, e2, c2 = spec_run("recipe " .. job .. " --help")
      assert.equal(0, c2, e2)
      assert.truthy(o2:find("output.dir = ", 1, true), o2)
      assert.falsy(o2:find("(no description)", 1, true), job .. ":\n" .. o2)
    end
  end)

  it("Ctrl-C stops a recipe run at the next op boundary and writes the report and the outputs so far", function()
    local d = spec_tmpdir()
    local log = d .. ".log"
    -- start the run, wait for its first progress line, then send SIGINT as Ctrl-C would
    local sh = string.format([[
      %s recipe hunyuan sampler.steps=500 video.width=64 video.height=32 video.frames=5 model.layers.double=1 \
        model.layers.single=1 output.dir=%s > %s 2>&1 &
      pid=$!
      i=0; while [ $i -lt 1200 ] && ! grep -q '^step ' %s 2>/dev/null; do sleep 0.1; i=$((i+1)); done
      kill -INT $pid; wait $pid; echo "rc=$?"]], spec_bin, d, log, log)
    local f = io.popen(sh)
    local res = f:read("*a")
    f:close()
    local out = io.open(log):read("*a")
    assert.truthy(res:find("rc=130", 1, true), res .. out)
    local txt = io.open(d .. "/report.txt"):read("*a")
    local n = tonumber(txt:match("interrupted at step (%d+)"))
    assert.truthy(n, txt)
    assert.is_true(n >= 1 and n < 500, txt)
    assert.truthy(txt:find("steps 0.." .. (n - 1) .. " of 0..499 done", 1, true), txt)
    local js = io.open(d .. "/report.json"):read("*a")
    assert.truthy(js:find('"interrupted"', 1, true), js)
    local lat = adaspa.safetensors.load(d .. "/latents.safetensors")
    assert.same({16, 2, 4, 8}, lat.latents:shape())
    assert.truthy(io.open(d .. "/frame_000.png"))
    assert.truthy(out:find("interrupted at step " .. n, 1, true), out)
    os.execute("rm -rf " .. d .. " " .. log)
  end)

  it("Ctrl-C in the REPL interrupts the running chunk and returns to the prompt with the state kept", function()
    local d = spec_tmpdir()
    assert.is_true(adaspa.mkdir(d) ~= false)
    -- through a pipe (no terminal): SIGINT while a loop of ops runs
    local sh = string.format([[
      ( echo 'x = 5'; echo 'for i = 1, 1e9 do adaspa.zeros({1}) end'; sleep 4; echo 'print(x + 1)' ) | %s > %s/out 2> %s/err &
      pid=$!
      sleep 2; kill -INT $pid; wait $pid; echo "rc=$?"]], spec_bin, d, d)
    local f = io.popen(sh)
    local res = f:read("*a")
    f:close()
    local out, err = io.open(d .. "/out"):read("*a"), io.open(d .. "/err"):read("*a")
    assert.truthy(err:find("adaspa: interrupted", 1, true), err)
    assert.equal("6\n", out)
    assert.truthy(res:find("rc=1", 1, true), res) -- the pipe REPL's status counts the error
    os.execute("rm -rf " .. d)
  end)

  it("on a terminal: Ctrl-C at the prompt drops the line, in a chunk returns to the prompt; history is saved as lines are entered", function()
    if os.execute("command -v script > /dev/null 2>&1") ~= 0 then return pending("needs script(1) for a terminal") end
    local d = spec_tmpdir()
    assert.is_true(adaspa.mkdir(d) ~= false)
    -- script(1) gives the REPL a terminal; \003 is Ctrl-C on it. The feeder waits for each prompt
    -- in the output (a loaded machine starts slowly), and the shell inside script(1) ignores SIGINT
    -- and records the REPL's own exit status, so script(1)'s handling of its child does not count.
    local sh = string.format([[
      D=%s; prompts() { n=0; while [ $n -lt 300 ] && [ "$(grep -o 'adaspa> ' $D/out 2>/dev/null | wc -l)" -lt $1 ]; do sleep 0.1; n=$((n+1)); done; }
      ( prompts 1; printf 'x = 5\n'; prompts 2; printf 'abc'; sleep 0.5; printf '\003'; prompts 3
        printf 'for i = 1, 1e9 do adaspa.zeros({1}) end\n'; sleep 2; printf '\003'; prompts 4
        printf 'print(x + 1)\n'; prompts 5; cp $D/.adaspa_history $D/during; printf '\004'; sleep 1 ) |
      HOME=$D timeout 60 script -qec "trap '' INT; %s; echo adaspa-rc=\$?" /dev/null > $D/out 2>&1; echo "rc=$?"]],
      d, spec_bin)
    local f = io.popen(sh)
    local res = f:read("*a")
    f:close()
    local out = io.open(d .. "/out"):read("*a")
    assert.truthy(out:find("adaspa-rc=0", 1, true), res .. out)
    assert.truthy(out:find("adaspa: interrupted", 1, true), out)
    assert.truthy(out:find("\n6\r?\n"), out)
    local during = io.open(d .. "/during"):read("*a")
    assert.truthy(during:find("x\\040=\\0405", 1, true), during)
    assert.truthy(during:find("print(x\\040+\\0401)", 1, true), during)
    assert.falsy(during:find("abc", 1, true), during) -- the dropped line is not history
    os.execute("rm -rf " .. d)
  end)
end)
