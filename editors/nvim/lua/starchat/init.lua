--- starchat.nvim: chat, Explain and Fix through the StarChat language server, streamed live.
local config = require("starchat.config")
local client = require("starchat.client")
local chat = require("starchat.chat")
local completion = require("starchat.completion")

local M = {}

local ids = client.commands
local did_setup = false

local function notify(msg, level)
  if config.options.notify or (level or vim.log.levels.INFO) >= vim.log.levels.WARN then
    vim.notify("StarChat: " .. msg, level or vim.log.levels.INFO)
  end
end

-- A server error table, or a string, as one line for the user.
local function error_text(err)
  if type(err) == "table" then
    return err.message or vim.inspect(err)
  end
  return tostring(err)
end

--- Deep-merges `opts` over the defaults and attaches the server to matching buffers.
---@param opts starchat.Options|nil
function M.setup(opts)
  config.apply(opts)
  did_setup = true
  local group = vim.api.nvim_create_augroup("starchat", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    callback = function(args)
      if client.wants(args.buf) then
        client.start(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local c = vim.lsp.get_client_by_id(args.data.client_id)
      if c and c.name == client.name and client.wants(args.buf) then
        completion.attach(args.buf, c)
      end
    end,
  })
  -- Buffers already open when setup() runs (e.g. lazy-loaded plugin).
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= "" and client.wants(bufnr) then
      client.start(bufnr)
    end
  end
end

local function ensure_setup()
  if not did_setup then
    M.setup({})
  end
end

--- Sends new settings (merged over the current ones) to running servers.
---@param settings starchat.Settings
function M.update_settings(settings)
  ensure_setup()
  config.options.settings = vim.tbl_deep_extend("force", config.options.settings, settings)
  for _, c in ipairs(vim.lsp.get_clients({ name = client.name })) do
    c.settings = client.server_settings()
    client.call(c, "notify", "workspace/didChangeConfiguration", { settings = c.settings })
  end
end

-- Runs fn(conversation_id), creating a conversation on the server when there is none yet.
local function with_conversation(c, bufnr, fn)
  if chat.current then
    return fn(chat.current)
  end
  client.execute(c, ids.new_conversation, {}, bufnr, {
    on_done = function(err, result)
      if err or type(result) ~= "table" or type(result.conversationId) ~= "string" then
        return notify("could not start a conversation: " .. error_text(err or "no id"), vim.log.levels.ERROR)
      end
      chat.current = result.conversationId
      fn(result.conversationId)
    end,
  })
end

-- Sends one generating command and streams its reply into the chat buffer.
local function stream_turn(c, command, args, bufnr, conversation, user_text, enter)
  local chat_buf = chat.buffer(conversation)
  chat.show(chat_buf, enter)
  local turn = chat.begin_turn(chat_buf, user_text)
  local request
  request = client.execute(c, command, args, bufnr, {
    on_delta = function(delta)
      chat.add_delta(turn, delta)
    end,
    on_done = function(err, result, request)
      local notes = {}
      if request.cancelled or (type(result) == "table" and result.cancelled) then
        table.insert(notes, "[stopped]")
        chat.end_turn(turn, nil, notes)
        return
      end
      if err then
        table.insert(notes, "Error: " .. error_text(err))
        chat.end_turn(turn, nil, notes)
        return notify(error_text(err), vim.log.levels.ERROR)
      end
      result = type(result) == "table" and result or {}
      if result.truncated and result.truncated ~= vim.NIL and result.truncated ~= false then
        local what = type(result.truncated) == "table" and table.concat(result.truncated, ", ")
          or tostring(result.truncated)
        table.insert(notes, "context cut to fit the model: " .. what)
      end
      if command == ids.fix then
        table.insert(notes, result.applied and "fix applied to the buffer" or "no edit applied")
      end
      chat.end_turn(turn, result.reply, notes)
      if type(result.conversationId) == "string" and command ~= ids.fix then
        chat.current = result.conversationId
      end
    end,
  })
  request.chat_bufnr = chat_buf
  M.last_request = request
  return request
end

-- The LSP range of lines line1..line2 (1-based, inclusive) of a buffer.
local function line_range(c, bufnr, line1, line2)
  local last = vim.api.nvim_buf_get_lines(bufnr, line2 - 1, line2, false)[1] or ""
  local encoding = c.offset_encoding or "utf-16"
  return {
    start = { line = line1 - 1, character = 0 },
    ["end"] = { line = line2 - 1, character = vim.lsp.util.character_offset(bufnr, line2 - 1, #last, encoding) },
  }
end

-- The buffer's diagnostics on lines line1..line2 in LSP form.
local function range_diagnostics(bufnr, line1, line2)
  local found = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    if d.lnum + 1 >= line1 and d.lnum + 1 <= line2 then
      table.insert(found, d)
    end
  end
  if vim.lsp.diagnostic.from then
    return vim.lsp.diagnostic.from(found)
  end
  return vim.tbl_map(function(d)
    return {
      range = { start = { line = d.lnum, character = d.col }, ["end"] = { line = d.end_lnum or d.lnum, character = d.end_col or d.col } },
      message = d.message,
      severity = d.severity,
      source = d.source,
    }
  end, found)
end

-- Checks that a command runs on a file the server has open; returns the client or nil.
local function source_client(bufnr)
  ensure_setup()
  if vim.bo[bufnr].buftype ~= "" or vim.api.nvim_buf_get_name(bufnr) == "" then
    notify("run this on a file buffer (the server only sees files it has open)", vim.log.levels.WARN)
    return nil
  end
  local c = client.get(bufnr)
  if not c then
    return nil
  end
  if not vim.lsp.buf_is_attached(bufnr, c.id) then
    vim.lsp.buf_attach_client(bufnr, c.id)
  end
  return c
end

--- Explains a range of a file in the chat buffer (`args` as the server's code action sends them).
---@param bufnr integer
---@param args {textDocument: {uri: string}, range: table}
---@return starchat.Request|nil
function M.explain_range(bufnr, args)
  local c = source_client(bufnr)
  if not c then
    return nil
  end
  local r = args.range
  local label = ("Explain `%s` lines %d-%d"):format(vim.fn.fnamemodify(vim.api.nvim_buf_get_name(bufnr), ":~:."), r.start.line + 1, r["end"].line + 1)
  local request
  with_conversation(c, bufnr, function(conversation)
    local full = vim.tbl_extend("force", args, { conversationId = conversation })
    request = stream_turn(c, ids.explain, full, bufnr, conversation, label, false)
  end)
  return request
end

--- Asks the server to fix a range; it streams the reasoning and applies the edit itself.
---@param bufnr integer
---@param args {textDocument: {uri: string}, range: table, diagnostics: table[]|nil}
---@return starchat.Request|nil
function M.fix_range(bufnr, args)
  local c = source_client(bufnr)
  if not c then
    return nil
  end
  local r = args.range
  local label = ("Fix `%s` lines %d-%d"):format(vim.fn.fnamemodify(vim.api.nvim_buf_get_name(bufnr), ":~:."), r.start.line + 1, r["end"].line + 1)
  local request
  with_conversation(c, bufnr, function(conversation)
    request = stream_turn(c, ids.fix, args, bufnr, conversation, label, false)
  end)
  return request
end

--- `:[range]StarChatExplain`
---@param line1 integer
---@param line2 integer
function M.explain(line1, line2)
  local bufnr = vim.api.nvim_get_current_buf()
  local c = source_client(bufnr)
  if not c then
    return nil
  end
  return M.explain_range(bufnr, {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = line_range(c, bufnr, line1, line2),
  })
end

--- `:[range]StarChatFix`
---@param line1 integer
---@param line2 integer
function M.fix(line1, line2)
  local bufnr = vim.api.nvim_get_current_buf()
  local c = source_client(bufnr)
  if not c then
    return nil
  end
  local args = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = line_range(c, bufnr, line1, line2),
  }
  local diagnostics = range_diagnostics(bufnr, line1, line2)
  if #diagnostics > 0 then
    args.diagnostics = diagnostics
  end
  return M.fix_range(bufnr, args)
end

--- `:[range]StarChat [message]`: opens the chat and sends a turn (asks for one if empty).
---@param message string|nil
---@param line1 integer|nil with line2, a range of the current file to talk about
---@param line2 integer|nil
function M.chat(message, line1, line2)
  ensure_setup()
  local bufnr = vim.api.nvim_get_current_buf()
  local is_file = vim.bo[bufnr].buftype == "" and vim.api.nvim_buf_get_name(bufnr) ~= ""
  local c = is_file and source_client(bufnr) or client.get(bufnr)
  if not c then
    return
  end
  if message == nil or message == "" then
    with_conversation(c, bufnr, function(conversation)
      chat.show(chat.buffer(conversation), true)
      M.prompt(conversation)
    end)
    return
  end
  local args = { message = message }
  if is_file and line1 then
    args.textDocument = { uri = vim.uri_from_bufnr(bufnr) }
    args.range = line_range(c, bufnr, line1, line2)
  end
  with_conversation(c, bufnr, function(conversation)
    args.conversationId = conversation
    stream_turn(c, ids.chat, args, bufnr, conversation, message, true)
  end)
end

--- Asks for a message (vim.ui.input) and sends it to a conversation.
---@param conversation string
function M.prompt(conversation)
  vim.ui.input({ prompt = "StarChat> " }, function(input)
    if input and input ~= "" then
      chat.current = conversation
      chat.show(chat.buffer(conversation), true)
      M.chat(input)
    end
  end)
end

--- `:StarChatStop`: cancels every running request.
---@return integer stopped how many requests were cancelled
function M.stop()
  local stopped = 0
  for _, request in ipairs(vim.list_slice(client.active)) do
    if client.cancel(request) then
      stopped = stopped + 1
    end
  end
  notify(stopped > 0 and "stopped" or "nothing to stop")
  return stopped
end

--- `:StarChatNew`: starts a new conversation and opens its buffer.
function M.new()
  ensure_setup()
  local bufnr = vim.api.nvim_get_current_buf()
  local c = client.get(bufnr)
  if not c then
    return
  end
  chat.current = nil
  with_conversation(c, bufnr, function(conversation)
    chat.show(chat.buffer(conversation), true)
  end)
end

--- Runs a command that does not stream on the current buffer's server; `on_result` gets
--- its result, an error is notified.
local function run_on_current(command, on_result)
  ensure_setup()
  local bufnr = vim.api.nvim_get_current_buf()
  local c = client.get(bufnr)
  if not c then
    return
  end
  client.execute(c, command, {}, bufnr, {
    on_done = function(err, result)
      if err then
        return notify(error_text(err), vim.log.levels.ERROR)
      end
      on_result(result)
    end,
  })
end

--- `:StarChatClearFeedback`: deletes the feedback log of this buffer's workspace.
function M.clear_feedback()
  run_on_current(ids.clear_feedback, function(result)
    local deleted = type(result) == "table" and result.deleted or {}
    if #deleted == 0 then
      return notify("there is no feedback log to delete")
    end
    notify("deleted " .. table.concat(vim.tbl_map(function(d)
      return d.path
    end, deleted), ", "))
  end)
end

--- `:StarChatHistory`: picks an earlier conversation of this workspace and makes it current.
function M.history()
  run_on_current(ids.list_conversations, function(result)
    local items = type(result) == "table" and (result.conversations or result) or {}
    if #items == 0 then
      return notify("no conversations yet")
    end
    vim.ui.select(items, {
      prompt = "StarChat conversations",
      format_item = function(item)
        local title = (item.title and item.title ~= "") and item.title or "(untitled)"
        return ("%s  [%s messages, %s]"):format(title, tostring(item.messages or "?"), tostring(item.updated or ""))
      end,
    }, function(item)
      if item then
        chat.current = item.conversationId
        local chat_buf = chat.buffer(item.conversationId)
        if vim.api.nvim_buf_line_count(chat_buf) == 1 then
          chat.append(chat_buf, ("# %s\n\n_Earlier turns are kept by the server; :StarChat continues this conversation._"):format(item.title or item.conversationId))
        end
        chat.show(chat_buf, true)
      end
    end)
  end)
end

-- Code actions from the server run through the same streaming path as the commands.
client.command_handlers[ids.explain] = function(command, ctx)
  M.explain_range(ctx.bufnr, (command.arguments or {})[1] or {})
end
client.command_handlers[ids.fix] = function(command, ctx)
  M.fix_range(ctx.bufnr, (command.arguments or {})[1] or {})
end

return M
