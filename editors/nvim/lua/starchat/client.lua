--- The LSP client: starts the StarChat server and runs its commands with streamed replies.
local config = require("starchat.config")

local M = {}

M.name = "starchat"

--- Command ids, mirrored from lsp_server/commands.py and editors/vscode/src/constants.ts.
M.commands = {
  chat = "starchat.chat",
  explain = "starchat.explain",
  fix = "starchat.fix",
  new_conversation = "starchat.newConversation",
  list_conversations = "starchat.listConversations",
  delete_conversation = "starchat.deleteConversation",
  export_conversations = "starchat.exportConversations",
  accept_completion = "starchat.acceptCompletion", -- carried by inline completion items (feedback log)
  clear_feedback = "starchat.clearFeedback",
}

local has_011 = vim.fn.has("nvim-0.11") == 1

--- Calls a client method the way this Neovim version wants it (0.11 made them methods).
---@param client vim.lsp.Client
---@param method string
function M.call(client, method, ...)
  if has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end
local call = M.call

---@class starchat.Request
---@field client vim.lsp.Client
---@field id integer|nil LSP request id
---@field token string workDoneToken the server streams on
---@field command string
---@field done boolean a response (or a local cancel) has been handled
---@field cancelled boolean
---@field ended boolean the server sent the progress `end` for this token
---@field deltas string[]

---@type table<string, starchat.Request> by progress token
local streams = {}
---@type starchat.Request[] requests whose response has not arrived yet
M.active = {}
local counter = 0

-- JSON needs objects, not Lua's empty tables (which encode as []).
local function as_object(value)
  if type(value) == "table" and next(value) == nil then
    return vim.empty_dict()
  end
  return value
end

--- The settings table the server reads under the section `starchat`.
---@return table
function M.server_settings()
  local s = vim.deepcopy(config.options.settings)
  for _, key in ipairs({ "generation", "context", "worker", "completion", "feedback" }) do
    s[key] = as_object(s[key] or {})
  end
  return { starchat = s }
end

local function progress_handler(err, result, ctx, cfg)
  local request = result and streams[result.token]
  if not request then
    -- Not ours (e.g. "Loading model"): Neovim's own handler feeds vim.lsp.status().
    return vim.lsp.handlers["$/progress"](err, result, ctx, cfg)
  end
  local value = result.value or {}
  if value.kind == "report" and type(value.message) == "string" and value.message ~= "" then
    if not request.done then
      table.insert(request.deltas, value.message)
      if request.on_delta then
        request.on_delta(value.message)
      end
    end
  elseif value.kind == "end" then
    request.ended = true
    if request.done then
      streams[result.token] = nil
    end
  end
end

--- Handlers for the server's command ids when they arrive from a code action.
---@type table<string, fun(command: lsp.Command, ctx: table)>
M.command_handlers = {}

--- The vim.lsp.start() configuration for a project root.
---@param root_dir string
---@return vim.lsp.ClientConfig
function M.client_config(root_dir)
  local opts = config.options
  local settings = M.server_settings()
  return {
    name = M.name,
    cmd = opts.cmd,
    cmd_env = opts.cmd_env,
    root_dir = root_dir,
    init_options = settings,
    settings = settings,
    handlers = { ["$/progress"] = progress_handler },
    commands = M.command_handlers,
  }
end

--- Starts (or reuses) the client for a buffer; `attach=false` for non-file buffers.
---@param bufnr integer
---@param attach boolean|nil
---@return integer|nil client_id
function M.start(bufnr, attach)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local root = (name ~= "" and vim.fs.root(bufnr, config.options.root_markers)) or vim.fn.getcwd()
  if vim.fn.executable(config.options.cmd[1]) ~= 1 then
    vim.notify_once(
      ("starchat: server command %q not found; set opts.cmd in setup()"):format(config.options.cmd[1]),
      vim.log.levels.ERROR
    )
    return nil
  end
  return vim.lsp.start(M.client_config(root), { bufnr = bufnr, attach = attach ~= false })
end

--- True when the filetype of `bufnr` is one the user wants the server on.
---@param bufnr integer
---@return boolean
function M.wants(bufnr)
  if vim.bo[bufnr].buftype ~= "" or vim.api.nvim_buf_get_name(bufnr) == "" then
    return false
  end
  local fts = config.options.filetypes
  return fts == nil or vim.tbl_contains(fts, vim.bo[bufnr].filetype)
end

--- The client for `bufnr`, else any running StarChat client, else a new one.
---@param bufnr integer
---@return vim.lsp.Client|nil
function M.get(bufnr)
  local clients = vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
  if #clients == 0 then
    clients = vim.lsp.get_clients({ name = M.name })
  end
  if #clients > 0 then
    return clients[1]
  end
  local id = M.start(bufnr, M.wants(bufnr))
  return id and vim.lsp.get_client_by_id(id) or nil
end

-- Runs fn once the client has finished `initialize`, without blocking the UI.
local function when_ready(client, fn, waited_ms)
  if client.initialized then
    return fn()
  end
  waited_ms = waited_ms or 0
  if waited_ms > 30000 or call(client, "is_stopped") then
    return fn("the StarChat server did not start; see :checkhealth starchat")
  end
  vim.defer_fn(function()
    when_ready(client, fn, waited_ms + 25)
  end, 25)
end

--- Runs `workspace/executeCommand` with a workDoneToken so replies stream in.
--- `handlers.on_delta(text)` gets each delta; `handlers.on_done(err, result, request)` runs
--- exactly once: on the response, on a local cancel, or when the request cannot be sent.
---@param client vim.lsp.Client
---@param command string
---@param args table|nil the single argument object
---@param bufnr integer
---@param handlers {on_delta: fun(text: string)|nil, on_done: fun(err: table|string|nil, result: table|nil, request: starchat.Request)}
---@return starchat.Request
function M.execute(client, command, args, bufnr, handlers)
  counter = counter + 1
  ---@type starchat.Request
  local request = {
    client = client,
    token = ("starchat-%d-%d"):format(vim.fn.getpid(), counter),
    command = command,
    done = false,
    cancelled = false,
    ended = false,
    deltas = {},
    on_delta = handlers.on_delta,
  }
  local function finish(err, result)
    if request.done then
      return
    end
    request.done = true
    request.err, request.result = err, result
    if request.ended then
      streams[request.token] = nil
    end
    for i, r in ipairs(M.active) do
      if r == request then
        table.remove(M.active, i)
        break
      end
    end
    handlers.on_done(err, result, request)
  end
  request.finish = finish
  table.insert(M.active, request)
  streams[request.token] = request
  when_ready(client, function(startup_err)
    if startup_err then
      return finish(startup_err)
    end
    if request.done then
      return -- stopped before the server was ready
    end
    local params = {
      command = command,
      arguments = { as_object(args or {}) },
      workDoneToken = request.token,
    }
    local ok, id = call(client, "request", "workspace/executeCommand", params, function(err, result)
      finish(err, result)
    end, bufnr)
    if not ok then
      return finish("the StarChat server is not running")
    end
    request.id = id
  end)
  return request
end

--- Cancels a running request ($/cancelRequest); its on_done runs at once with `cancelled`.
---@param request starchat.Request
---@return boolean cancelled false when it had already finished
function M.cancel(request)
  if request.done then
    return false
  end
  request.cancelled = true
  if request.id then
    call(request.client, "cancel_request", request.id)
  end
  request.finish(nil, nil)
  return true
end

return M
