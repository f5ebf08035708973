--- `:checkhealth starchat`: Neovim version, server command, server start-up, model reachable.
local config = require("starchat.config")

local M = {}

local health = vim.health

-- Starts a private server over stdio, runs `initialize` and waits for its model to load.
-- Returns a table {server_info, init_ms, model_ok, model_message, err}.
local function probe(cmd, timeout_ms)
  local out = { model_ok = nil }
  local started = vim.uv.hrtime()
  local ok, rpc = pcall(vim.lsp.rpc.start, cmd, {
    notification = function(method, params)
      -- The server reports model loading on a progress token it creates.
      if method == "$/progress" and type(params) == "table" and type(params.value) == "table" then
        local value = params.value
        if value.kind == "begin" and value.title == "Loading model" then
          out.loading_token = params.token
        elseif value.kind == "end" and params.token == out.loading_token then
          out.model_message = value.message or ""
          out.model_ok = (value.message or ""):find("ready") ~= nil
        end
      elseif method == "window/showMessage" and type(params) == "table" and params.type == 1 then
        out.model_message = params.message
        out.model_ok = false
      end
    end,
    server_request = function(method, _)
      if method == "window/workDoneProgress/create" then
        return vim.NIL, nil
      end
      return vim.NIL, nil
    end,
    on_exit = function(code, _)
      out.exited = code
    end,
  }, { env = config.options.cmd_env, cwd = vim.fn.getcwd() })
  if not ok or not rpc then
    out.err = "could not spawn: " .. tostring(rpc)
    return out
  end
  rpc.request("initialize", {
    processId = vim.fn.getpid(),
    rootUri = vim.uri_from_fname(vim.fn.getcwd()),
    capabilities = { window = { workDoneProgress = true } },
    initializationOptions = require("starchat.client").server_settings(),
    clientInfo = { name = "starchat.nvim checkhealth" },
  }, function(err, result)
    out.init_ms = (vim.uv.hrtime() - started) / 1e6
    if err then
      out.err = "initialize failed: " .. tostring(err.message or err)
    else
      out.server_info = result and result.serverInfo or {}
      rpc.notify("initialized", vim.empty_dict())
    end
  end)
  vim.wait(timeout_ms, function()
    return out.err ~= nil or out.exited ~= nil or out.model_ok ~= nil
  end, 50)
  if out.exited ~= nil and not out.err and out.model_ok == nil then
    out.err = ("the server exited with code %s"):format(tostring(out.exited))
  end
  pcall(rpc.request, "shutdown", nil, function()
    pcall(rpc.notify, "exit")
  end)
  vim.wait(2000, function()
    return out.exited ~= nil
  end, 50)
  if out.exited == nil then
    rpc.terminate()
  end
  return out
end

--- Entry point of `:checkhealth starchat`.
function M.check()
  health.start("starchat.nvim")
  local v = vim.version()
  local version = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. version)
  else
    health.error("Neovim " .. version .. " is too old; starchat.nvim needs 0.10 or newer")
    return
  end
  if not package.loaded["starchat"] then
    health.warn("require('starchat').setup() has not been called; checking the defaults")
  end

  health.start("StarChat language server")
  local cmd = config.options.cmd
  local exe = vim.fn.exepath(cmd[1])
  if exe == "" then
    health.error(("server command %q not found"):format(cmd[1]), {
      "Install the project (`make demo` creates .venv/bin/starchat) and put it on PATH,",
      "or set opts.cmd = { '/path/to/.venv/bin/starchat', 'lsp' } in setup().",
    })
    return
  end
  health.ok(("server command: %s (%s)"):format(table.concat(cmd, " "), exe))

  local running = vim.lsp.get_clients({ name = "starchat" })
  health.info(("%d StarChat client(s) running in this Neovim"):format(#running))

  local result = probe(cmd, 120000)
  if result.err then
    health.error("the server did not start: " .. result.err, { "Run the command in a terminal to see its error." })
    return
  end
  if not result.server_info then
    health.error("the server did not answer initialize within 120 s")
    return
  end
  local info = result.server_info
  health.ok(("server starts: %s %s (initialize answered in %.0f ms)"):format(
    info.name or "?", info.version or "?", result.init_ms or -1))
  if result.model_ok then
    health.ok(("model reachable: %s (%s)"):format(tostring(config.options.settings.model), result.model_message))
  elseif result.model_ok == false then
    health.error("model not reachable: " .. (result.model_message or "unknown error"),
      { "Check opts.settings.model; `starchat ask --model SPEC 'hi'` shows the full error." })
  else
    health.warn("the model did not finish loading within 120 s")
  end
end

return M
