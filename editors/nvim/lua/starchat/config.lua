--- Options for starchat.nvim: documented defaults, deep-merged with the user's `setup(opts)`.
local M = {}

---@class starchat.ChatOptions
---@field layout "vertical"|"horizontal"|"tab"|"current" where the chat buffer opens
---@field size integer|nil width (vertical) or height (horizontal) of the chat window
---@field follow boolean keep the chat window scrolled to the end while an answer streams in

---@class starchat.CompletionOptions inline completion (ghost text) in insert mode
---@field enabled boolean ask the server for suggestions while typing
---@field accept_key string inserts the suggestion while one is shown (else the key itself)
---@field debounce_ms integer wait this long after the last keystroke before asking
---@field native boolean on Neovim 0.12+, use the built-in vim.lsp.inline_completion

---@class starchat.Settings settings sent to the server under the section `starchat`
---@field model string|table model spec: "default", a folder, a .gguf file, or a HF id
---@field generation table e.g. { max_new_tokens = 512, temperature = 0 }
---@field context table how much editor context goes into the prompt
---@field worker table model worker options
---@field feedback table the feedback log: { enabled = false } (local only; see docs/lsp.md)

---@class starchat.Options
---@field cmd string[] the language server command
---@field cmd_env table<string,string>|nil extra environment for the server process
---@field filetypes string[]|nil filetypes to attach to; nil attaches to every file buffer
---@field root_markers string[] files that mark a project root (one server per root)
---@field settings starchat.Settings
---@field chat starchat.ChatOptions
---@field completion starchat.CompletionOptions
---@field notify boolean report start/end of requests with vim.notify
M.defaults = {
  cmd = { "starchat", "lsp" },
  cmd_env = nil,
  filetypes = nil,
  root_markers = { ".git", "pyproject.toml", "package.json", "Cargo.toml", "go.mod", "Makefile" },
  settings = {
    model = "default",
    generation = {},
    context = {},
    worker = {},
    -- Log accepted completions, applied edits and chats on this computer for `starchat adapt
    -- --feedback`; off unless you turn it on. `starchat feedback show|clear` sees and deletes it.
    feedback = { enabled = false },
  },
  chat = {
    layout = "vertical",
    size = nil,
    follow = true,
  },
  completion = {
    enabled = true,
    accept_key = "<Tab>",
    debounce_ms = 150,
    native = true,
  },
  notify = true,
}

---@type starchat.Options
M.options = vim.deepcopy(M.defaults)

--- Checks the merged options; returns nil or a one-sentence error.
---@param opts starchat.Options
---@return string|nil
local function check(opts)
  if type(opts.cmd) ~= "table" or #opts.cmd == 0 or type(opts.cmd[1]) ~= "string" then
    return "starchat: opts.cmd must be a non-empty list of strings, e.g. { 'starchat', 'lsp' }"
  end
  if opts.filetypes ~= nil and type(opts.filetypes) ~= "table" then
    return "starchat: opts.filetypes must be a list of filetypes or nil"
  end
  local layouts = { vertical = true, horizontal = true, tab = true, current = true }
  if not layouts[opts.chat.layout] then
    return "starchat: opts.chat.layout must be one of vertical, horizontal, tab, current"
  end
  local c = opts.completion
  if type(c) ~= "table" or type(c.enabled) ~= "boolean" or type(c.accept_key) ~= "string"
    or type(c.debounce_ms) ~= "number" or c.debounce_ms < 0 then
    return "starchat: opts.completion wants { enabled = bool, accept_key = string, debounce_ms = number >= 0 }"
  end
  if type(opts.settings) ~= "table" then
    return "starchat: opts.settings must be a table"
  end
  return nil
end

--- Deep-merges `opts` over the defaults and stores the result in `M.options`.
---@param opts starchat.Options|nil
---@return starchat.Options
function M.apply(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("starchat: setup() takes a table of options", 0)
  end
  -- Lists replace rather than merge: a user's cmd or filetypes is the whole list.
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  if opts.cmd then
    merged.cmd = vim.deepcopy(opts.cmd)
  end
  if opts.filetypes then
    merged.filetypes = vim.deepcopy(opts.filetypes)
  end
  if opts.root_markers then
    merged.root_markers = vim.deepcopy(opts.root_markers)
  end
  local err = check(merged)
  if err then
    error(err, 0)
  end
  M.options = merged
  return merged
end

return M
