-- End-to-end scenarios against the real server and model, run by tests/editors/test_nvim_e2e.py:
--   nvim --headless -u minimal_init.lua -c "luafile e2e.lua"
-- Environment: STARCHAT_TEST_CMD (JSON list: the server command), STARCHAT_TEST_FILE (a Python
-- file to open), STARCHAT_TEST_OUT (where the JSON results go), STARCHAT_TEST_ONLY (optional,
-- comma-separated scenario names). Each scenario records facts; pytest asserts on them.
local results = {}
local out_path = assert(vim.env.STARCHAT_TEST_OUT, "STARCHAT_TEST_OUT not set")

local function write_results()
  local f = assert(io.open(out_path, "w"))
  f:write(vim.json.encode(results))
  f:close()
end

local function now_ms()
  return vim.uv.hrtime() / 1e6
end

local starchat = require("starchat")
local client_mod = require("starchat.client")
local chat = require("starchat.chat")

local function lines_of(bufnr)
  return vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
end

-- Waits (pumping the event loop, as a user's idle Neovim would) for the last request to finish.
local function wait_request(timeout_ms)
  local ok = vim.wait(timeout_ms, function()
    local r = starchat.last_request
    return r ~= nil and r.done
  end, 10)
  return ok, starchat.last_request
end

-- Records the longest pause of a 10 ms timer while fn runs: how responsive the UI stays.
local function with_ui_probe(fn)
  local timer = assert(vim.uv.new_timer())
  local last, max_gap = now_ms(), 0
  timer:start(10, 10, vim.schedule_wrap(function()
    local t = now_ms()
    max_gap = math.max(max_gap, t - last)
    last = t
  end))
  local value = fn()
  timer:stop()
  timer:close()
  return value, max_gap
end

local scenarios = {}

function scenarios.attach(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  r.filetype = vim.bo.filetype
  r.attached = vim.wait(60000, function()
    local c = vim.lsp.get_clients({ name = "starchat", bufnr = 0 })[1]
    return c ~= nil and c.initialized == true
  end, 20)
  local c = vim.lsp.get_clients({ name = "starchat", bufnr = 0 })[1]
  r.client_name = c and c.name
  r.commands = c and c.server_capabilities.executeCommandProvider and c.server_capabilities.executeCommandProvider.commands
end

function scenarios.explain(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  local started = now_ms()
  local first_delta_ms
  local done, gap = with_ui_probe(function()
    vim.cmd("4,6StarChatExplain")
    vim.wait(5000, function()
      return starchat.last_request ~= nil
    end, 10)
    local request = starchat.last_request
    local on_delta = request.on_delta
    request.on_delta = function(text)
      first_delta_ms = first_delta_ms or (now_ms() - started)
      on_delta(text)
    end
    return (wait_request(180000))
  end)
  local request = starchat.last_request
  r.done = done
  r.total_ms = now_ms() - started
  r.first_delta_ms = first_delta_ms
  r.max_ui_gap_ms = gap
  r.err = request.err and (request.err.message or tostring(request.err))
  r.reply = request.result and request.result.reply
  r.conversation = request.result and request.result.conversationId
  r.deltas = #request.deltas
  r.joined_deltas = table.concat(request.deltas)
  r.chat_name = vim.api.nvim_buf_get_name(request.chat_bufnr)
  r.chat_filetype = vim.bo[request.chat_bufnr].filetype
  r.chat_text = table.concat(lines_of(request.chat_bufnr), "\n")
  r.current_buffer_is_source = vim.api.nvim_buf_get_name(0) == vim.fn.fnamemodify(src, ":p")
end

function scenarios.chat(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  starchat.update_settings({ generation = { max_new_tokens = 16 } })
  local before = starchat.last_request
  vim.cmd("StarChat What does circle_area return?")
  vim.wait(5000, function()
    return starchat.last_request ~= before
  end, 10)
  local done, request = wait_request(60000)
  r.done = done
  r.err = request.err and (request.err.message or tostring(request.err))
  r.reply = request.result and request.result.reply
  r.conversation = request.result and request.result.conversationId
  r.chat_name = vim.api.nvim_buf_get_name(request.chat_bufnr)
  r.chat_text = table.concat(lines_of(request.chat_bufnr), "\n")
  r.chat_window_focused = vim.api.nvim_get_current_buf() == request.chat_bufnr
end

function scenarios.fix(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  local bufnr = vim.api.nvim_get_current_buf()
  r.before = lines_of(bufnr)
  -- Room for a whole fenced code block.
  starchat.update_settings({ generation = { max_new_tokens = 80 } })
  local started = now_ms()
  vim.cmd("1,2StarChatFix")
  local done, request = wait_request(180000)
  -- workspace/applyEdit arrives before the response; let the event loop settle.
  vim.wait(200)
  r.done = done
  r.total_ms = now_ms() - started
  r.err = request.err and (request.err.message or tostring(request.err))
  r.applied = request.result and request.result.applied
  r.reply = request.result and request.result.reply
  r.after = lines_of(bufnr)
end

function scenarios.stop(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  starchat.update_settings({ generation = { max_new_tokens = 400 } })
  vim.cmd("4,6StarChatExplain")
  vim.wait(5000, function()
    return starchat.last_request ~= nil and not starchat.last_request.done
  end, 10)
  local request = starchat.last_request
  r.got_delta = vim.wait(120000, function()
    return #request.deltas > 0
  end, 10)
  local stop_at = now_ms()
  vim.cmd("StarChatStop")
  r.done_at_once = request.done
  r.cancelled = request.cancelled
  r.deltas_at_stop = #request.deltas
  -- The server ends the progress when its generation loop has stopped.
  r.server_ended = vim.wait(15000, function()
    return request.ended
  end, 10)
  r.end_ms = now_ms() - stop_at
  vim.wait(1500)
  r.deltas_later = #request.deltas
  r.chat_text = table.concat(lines_of(request.chat_bufnr), "\n")
  -- The worker must be free again: a short request completes.
  starchat.update_settings({ generation = { max_new_tokens = 8 } })
  local again_at = now_ms()
  vim.cmd("4,6StarChatExplain")
  vim.wait(5000, function()
    return starchat.last_request ~= request
  end, 10)
  local done, next_request = wait_request(60000)
  r.next_done = done
  r.next_ms = now_ms() - again_at
  r.next_err = next_request.err and (next_request.err.message or tostring(next_request.err))
  r.next_reply = next_request.result and next_request.result.reply
end

function scenarios.code_action(r, src)
  vim.cmd.edit(vim.fn.fnameescape(src))
  local seen = {}
  local original_select = vim.ui.select
  -- Picks "Explain" the way a user would in the code-action menu.
  vim.ui.select = function(items, opts, on_choice)
    local pick
    for i, item in ipairs(items) do
      local title = opts.format_item and opts.format_item(item) or tostring(item)
      table.insert(seen, title)
      if not pick and title:find("Explain") then
        pick = i
      end
    end
    on_choice(pick and items[pick] or nil, pick)
  end
  starchat.update_settings({ generation = { max_new_tokens = 16 } })
  local before = starchat.last_request
  vim.api.nvim_win_set_cursor(0, { 4, 0 })
  vim.lsp.buf.code_action({ range = { start = { 4, 0 }, ["end"] = { 6, 0 } } })
  vim.wait(10000, function()
    return starchat.last_request ~= before
  end, 10)
  vim.ui.select = original_select
  r.titles = seen
  r.started = starchat.last_request ~= before
  if r.started then
    local done, request = wait_request(60000)
    r.done = done
    r.command = request.command
    r.err = request.err and (request.err.message or tostring(request.err))
    r.reply = request.result and request.result.reply
    r.streamed = #request.deltas
  end
end

function scenarios.health(r)
  vim.cmd("checkhealth starchat")
  r.lines = lines_of(0)
end

-- Any error still ends Neovim (a headless nvim would otherwise wait forever).
local function main()
  local cmd = vim.json.decode((assert(vim.env.STARCHAT_TEST_CMD, "STARCHAT_TEST_CMD not set")))
  starchat.setup({
    cmd = cmd,
    settings = { generation = { max_new_tokens = tonumber(vim.env.STARCHAT_TEST_MAX_TOKENS or "48") } },
    chat = { layout = "vertical" },
    notify = false,
  })

  local src = assert(vim.env.STARCHAT_TEST_FILE, "STARCHAT_TEST_FILE not set")
  local fix_src = vim.env.STARCHAT_TEST_FIX_FILE
  local only = vim.env.STARCHAT_TEST_ONLY
  local order = { "attach", "explain", "chat", "fix", "code_action", "stop", "health" }
  for _, name in ipairs(order) do
    if not only or vim.tbl_contains(vim.split(only, ","), name) then
      local r = {}
      local started = now_ms()
      local ok, err = xpcall(scenarios[name], debug.traceback, r, name == "fix" and fix_src or src)
      -- Scenarios may leave the chat window focused; start the next one from the source.
      vim.cmd("silent! only")
      r.ok = ok
      r.error = not ok and tostring(err) or nil
      r.elapsed_ms = now_ms() - started
      results[name] = r
      if name ~= "health" then
        starchat.update_settings({ generation = { max_new_tokens = tonumber(vim.env.STARCHAT_TEST_MAX_TOKENS or "48") } })
      end
      write_results()
    end
  end
  write_results()
  for _, c in ipairs(vim.lsp.get_clients({ name = "starchat" })) do
    client_mod.call(c, "stop")
  end
  vim.wait(3000, function()
    return #vim.lsp.get_clients({ name = "starchat" }) == 0
  end, 50)
end

local ok, err = xpcall(main, debug.traceback)
if not ok then
  results.runner_error = tostring(err)
  write_results()
end
vim.cmd("qa!")
