--- Inline completion: ghost text at the cursor from `textDocument/inlineCompletion`.
---
--- Neovim 0.12 and newer have it built in (`vim.lsp.inline_completion`): we enable that.
--- On 0.11 we do it ourselves, the llama.vim way: debounce typing, ask the server, draw the
--- answer as virtual text with an extmark, accept with a key (default <Tab>, only while a
--- suggestion is shown), dismiss on cursor move or leaving insert mode. Typing on cancels the
--- request in flight ($/cancelRequest); an answer for an older buffer state is dropped.
local config = require("starchat.config")
local call = require("starchat.client").call

local M = {}

local METHOD = "textDocument/inlineCompletion"
M.ns = vim.api.nvim_create_namespace("starchat_inline_completion")
--- What happened, in order (for :checkhealth-style debugging and the tests):
--- { "sent", id } { "cancelled", id } { "shown", text } { "accepted", text } { "command", id }
--- { "dropped", why }
M.events = {}

---@class starchat.InlineState
---@field timer uv.uv_timer_t|nil
---@field client vim.lsp.Client
---@field request_id integer|nil
---@field suggestion {text: string, row: integer, col: integer, command: table|nil}|nil

---@type table<integer, starchat.InlineState>
local states = {}

local function log(kind, value)
  table.insert(M.events, { kind, value })
  if #M.events > 500 then
    table.remove(M.events, 1)
  end
end

local function opts()
  return config.options.completion or config.defaults.completion
end

--- Removes the suggestion of `bufnr` from the screen.
---@param bufnr integer
function M.dismiss(bufnr)
  local state = states[bufnr]
  if state then
    state.suggestion = nil
  end
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

local function cancel_inflight(state)
  if state.request_id then
    log("cancelled", state.request_id)
    call(state.client, "cancel_request", state.request_id)
    state.request_id = nil
  end
end

local function stop_timer(state)
  if state.timer then
    state.timer:stop()
    state.timer:close()
    state.timer = nil
  end
end

--- The text of the suggestion `item` still to be shown at the cursor (row, col: 0-based bytes).
local function visible_text(bufnr, item, encoding, row, col)
  local range = item.range
  local text = type(item.insertText) == "table" and item.insertText.value or item.insertText
  if type(text) ~= "string" or text == "" then
    return nil
  end
  if not range then
    return text
  end
  if range.start.line ~= row then
    return nil
  end
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local start = vim.str_byteindex(line, encoding, range.start.character, false)
  local typed = line:sub(start + 1, col)
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  return text:sub(#typed + 1)
end

local function show(bufnr, text, row, col, command)
  M.dismiss(bufnr)
  local lines = vim.split(text, "\n", { plain = true })
  local extmark = {
    virt_text = { { lines[1], "Comment" } },
    virt_text_pos = "inline",
    hl_mode = "combine",
  }
  if #lines > 1 then
    extmark.virt_lines = vim.tbl_map(function(l)
      return { { l, "Comment" } }
    end, vim.list_slice(lines, 2))
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, extmark)
  states[bufnr].suggestion = { text = text, row = row, col = col, command = command }
  log("shown", text)
end

--- Asks the server for a completion at the cursor of the current window.
---@param bufnr integer
function M.request(bufnr)
  local state = states[bufnr]
  if not state or vim.api.nvim_get_current_buf() ~= bufnr or not vim.api.nvim_get_mode().mode:match("^i") then
    return
  end
  cancel_inflight(state)
  local client = state.client
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = 2 }
  local cursor = vim.api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local ok, id
  ok, id = call(client, "request", METHOD, params, function(err, result)
    if state.request_id == id then
      state.request_id = nil
    end
    if err or result == nil then
      return log("dropped", err and (err.message or "error") or "null")
    end
    local now = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_get_current_buf() ~= bufnr or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick
      or now[1] - 1 ~= row or now[2] ~= col or not vim.api.nvim_get_mode().mode:match("^i") then
      return log("dropped", "stale")
    end
    local items = result.items or result
    local item = items[1]
    local text = item and visible_text(bufnr, item, encoding, row, col)
    if not text or text == "" then
      return log("dropped", "empty")
    end
    show(bufnr, text, row, col, item.command)
  end, bufnr)
  if ok then
    state.request_id = id
    log("sent", id)
  end
end

--- Inserts the suggestion shown in `bufnr` and puts the cursor after it.
---@param bufnr integer
---@return boolean accepted
function M.accept(bufnr)
  local state = states[bufnr]
  local s = state and state.suggestion
  if not s then
    return false
  end
  M.dismiss(bufnr)
  local lines = vim.split(s.text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, s.col, lines)
  local last_row = s.row + #lines - 1
  local last_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { last_row + 1, last_col })
  log("accepted", s.text)
  if type(s.command) == "table" and type(s.command.command) == "string" then
    -- What LSP editors do on accept (VS Code, Neovim 0.12): run the item's command, here the
    -- server's feedback log entry (sent only while the user has that setting on).
    call(state.client, "request", "workspace/executeCommand",
      { command = s.command.command, arguments = s.command.arguments }, function() end, bufnr)
    log("command", s.command.command)
  end
  return true
end

local function on_typing(bufnr)
  local state = states[bufnr]
  if not state then
    return
  end
  M.dismiss(bufnr)
  cancel_inflight(state) -- typing on: the answer in flight is for text that is gone
  stop_timer(state)
  state.timer = vim.uv.new_timer()
  state.timer:start(opts().debounce_ms, 0, vim.schedule_wrap(function()
    stop_timer(state)
    M.request(bufnr)
  end))
end

-- The accept key works only while a suggestion is shown; otherwise it is the key itself.
local function map_accept(bufnr, shown, accept)
  local key = opts().accept_key
  if not key or key == "" then
    return
  end
  vim.keymap.set("i", key, function()
    if shown() then
      vim.schedule(accept) -- an expr mapping may not change the buffer itself
      return ""
    end
    return key
  end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = "StarChat: accept the suggestion" })
end

--- Turns inline completion on for `bufnr` served by `client`.
---@param bufnr integer
---@param client vim.lsp.Client
function M.attach(bufnr, client)
  local o = opts()
  if not o.enabled or states[bufnr] then
    return
  end
  if vim.lsp.inline_completion and o.native ~= false then
    -- Neovim 0.12+: the built-in client draws and accepts.
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    states[bufnr] = { client = client, native = true }
    if o.accept_key and o.accept_key ~= "" then
      vim.keymap.set("i", o.accept_key, function()
        if not vim.lsp.inline_completion.get() then
          return o.accept_key
        end
      end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = "StarChat: accept the suggestion" })
    end
    return
  end
  states[bufnr] = { client = client }
  local group = vim.api.nvim_create_augroup("starchat_inline_" .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_typing(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd("CursorMovedI", {
    group = group,
    buffer = bufnr,
    callback = function()
      local s = states[bufnr] and states[bufnr].suggestion
      local cursor = vim.api.nvim_win_get_cursor(0)
      if s and (cursor[1] - 1 ~= s.row or cursor[2] ~= s.col) then
        M.dismiss(bufnr)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local state = states[bufnr]
      if state then
        stop_timer(state)
        cancel_inflight(state)
      end
      M.dismiss(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ "LspDetach", "BufUnload" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
  map_accept(bufnr, function()
    return M.shown(bufnr) ~= nil
  end, function()
    M.accept(bufnr)
  end)
end

--- Turns inline completion off for `bufnr`.
---@param bufnr integer
function M.detach(bufnr)
  local state = states[bufnr]
  if not state then
    return
  end
  if state.native then
    vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
  else
    stop_timer(state)
    cancel_inflight(state)
    M.dismiss(bufnr)
    pcall(vim.api.nvim_del_augroup_by_name, "starchat_inline_" .. bufnr)
  end
  local key = opts().accept_key
  if key and key ~= "" then
    pcall(vim.keymap.del, "i", key, { buffer = bufnr })
  end
  states[bufnr] = nil
end

--- The suggestion shown in `bufnr` (nil when none), for tests and statuslines.
---@param bufnr integer
---@return string|nil
function M.shown(bufnr)
  if bufnr == nil or bufnr == 0 then
    bufnr = vim.api.nvim_get_current_buf()
  end
  local s = states[bufnr] and states[bufnr].suggestion
  return s and s.text or nil
end

return M
