--- The chat buffer: a markdown buffer per conversation, `starchat://chat/<conversationId>`,
--- into which streamed deltas are appended as they arrive.
local config = require("starchat.config")

local M = {}

--- The conversation new turns go to (nil until the first one is created).
---@type string|nil
M.current = nil

---@type table<string, integer> conversation id -> buffer
local buffers = {}

--- The buffer name of a conversation.
---@param id string
---@return string
function M.bufname(id)
  return "starchat://chat/" .. id
end

--- The chat buffer of a conversation, created on first use.
---@param id string
---@return integer bufnr
function M.buffer(id)
  local bufnr = buffers[id]
  if bufnr and vim.api.nvim_buf_is_valid(bufnr) then
    return bufnr
  end
  bufnr = vim.api.nvim_create_buf(true, true) -- listed scratch: nofile, no swap
  vim.api.nvim_buf_set_name(bufnr, M.bufname(id))
  vim.bo[bufnr].bufhidden = "hide"
  vim.bo[bufnr].filetype = "markdown"
  vim.b[bufnr].starchat_conversation = id
  vim.keymap.set("n", "<CR>", function()
    require("starchat").prompt(id)
  end, { buffer = bufnr, desc = "StarChat: send a message" })
  vim.keymap.set("n", "q", "<cmd>close<cr>", { buffer = bufnr, desc = "StarChat: close the chat" })
  buffers[id] = bufnr
  return bufnr
end

--- Shows the buffer in a window (reusing one that already shows it).
---@param bufnr integer
---@param enter boolean move the cursor into the chat window
---@return integer winid
function M.show(bufnr, enter)
  local win = vim.fn.bufwinid(bufnr)
  if win ~= -1 then
    if enter then
      vim.api.nvim_set_current_win(win)
    end
    return win
  end
  local opts = config.options.chat
  if opts.layout == "current" then
    vim.api.nvim_win_set_buf(0, bufnr)
    return vim.api.nvim_get_current_win()
  elseif opts.layout == "tab" then
    local prev = vim.api.nvim_get_current_tabpage()
    vim.cmd.tabnew()
    win = vim.api.nvim_get_current_win()
    vim.api.nvim_win_set_buf(win, bufnr)
    if not enter then
      vim.api.nvim_set_current_tabpage(prev)
    end
    return win
  end
  local split = opts.layout == "vertical" and "right" or "below"
  local win_opts = { split = split, win = -1 }
  if opts.size then
    win_opts[split == "right" and "width" or "height"] = opts.size
  end
  win = vim.api.nvim_open_win(bufnr, enter, win_opts)
  vim.wo[win].wrap = true
  vim.wo[win].linebreak = true
  return win
end

-- Keeps windows that were at the end of the buffer at the end as text arrives.
local function follow(bufnr, old_last)
  if not config.options.chat.follow then
    return
  end
  local last = vim.api.nvim_buf_line_count(bufnr)
  for _, win in ipairs(vim.fn.win_findbuf(bufnr)) do
    if vim.api.nvim_win_get_cursor(win)[1] >= old_last then
      vim.api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

--- Appends text at the very end of the buffer (continuing its last line).
---@param bufnr integer
---@param text string
function M.append(bufnr, text)
  if text == "" or not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  local last = vim.api.nvim_buf_line_count(bufnr)
  local tail = vim.api.nvim_buf_get_lines(bufnr, last - 1, last, false)[1] or ""
  local lines = vim.split(tail .. text, "\n", { plain = true })
  vim.api.nvim_buf_set_lines(bufnr, last - 1, last, false, lines)
  follow(bufnr, last)
end

---@class starchat.Turn
---@field bufnr integer
---@field reply_row integer 0-based line where the reply starts

--- Writes the user's side of a turn and the reply heading; returns the turn to stream into.
---@param bufnr integer
---@param user_text string
---@return starchat.Turn
function M.begin_turn(bufnr, user_text)
  local empty = vim.api.nvim_buf_line_count(bufnr) == 1
    and vim.api.nvim_buf_get_lines(bufnr, 0, 1, false)[1] == ""
  local lead = empty and "" or "\n\n"
  M.append(bufnr, lead .. "## You\n\n" .. user_text .. "\n\n## StarChat\n\n")
  vim.b[bufnr].starchat_busy = true
  return { bufnr = bufnr, reply_row = vim.api.nvim_buf_line_count(bufnr) - 1 }
end

--- Appends a streamed delta to the turn's reply.
---@param turn starchat.Turn
---@param delta string
function M.add_delta(turn, delta)
  M.append(turn.bufnr, delta)
end

--- The reply text shown so far for a turn.
---@param turn starchat.Turn
---@return string
function M.reply_text(turn)
  local lines = vim.api.nvim_buf_get_lines(turn.bufnr, turn.reply_row, -1, false)
  return table.concat(lines, "\n")
end

--- Ends a turn: makes the text equal the final reply (if a delta went missing) and adds notes.
---@param turn starchat.Turn
---@param reply string|nil the final reply; nil keeps what streamed in
---@param notes string[] one line each, shown in italics under the reply
function M.end_turn(turn, reply, notes)
  local bufnr = turn.bufnr
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  if type(reply) == "string" and M.reply_text(turn) ~= reply then
    vim.api.nvim_buf_set_lines(bufnr, turn.reply_row, -1, false, vim.split(reply, "\n", { plain = true }))
  end
  for _, note in ipairs(notes) do
    M.append(bufnr, "\n\n_" .. note .. "_")
  end
  vim.b[bufnr].starchat_busy = false
end

--- Shows a whole stored conversation (a list of {role, content}) in its buffer.
---@param id string
---@param messages table[]
---@return integer bufnr
function M.render(id, messages)
  local bufnr = M.buffer(id)
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, {})
  for _, message in ipairs(messages) do
    if message.role == "user" then
      M.append(bufnr, (M.reply_text({ bufnr = bufnr, reply_row = 0 }) == "" and "" or "\n\n") .. "## You\n\n" .. message.content)
    elseif message.role == "assistant" then
      M.append(bufnr, "\n\n## StarChat\n\n" .. message.content)
    end
  end
  return bufnr
end

return M
