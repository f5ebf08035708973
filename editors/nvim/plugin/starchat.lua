-- starchat.nvim entry point: load guard, version check, user commands.
if vim.g.loaded_starchat then
  return
end
vim.g.loaded_starchat = true

if vim.fn.has("nvim-0.10") ~= 1 then
  vim.notify("starchat.nvim needs Neovim 0.10 or newer", vim.log.levels.ERROR)
  return
end

local function starchat()
  return require("starchat")
end

vim.api.nvim_create_user_command("StarChat", function(cmd)
  local message = cmd.args ~= "" and cmd.args or nil
  if cmd.range > 0 then
    starchat().chat(message, cmd.line1, cmd.line2)
  else
    starchat().chat(message)
  end
end, { nargs = "*", range = true, desc = "StarChat: open the chat and send a message" })

vim.api.nvim_create_user_command("StarChatExplain", function(cmd)
  starchat().explain(cmd.line1, cmd.line2)
end, { range = true, desc = "StarChat: explain the selected lines" })

vim.api.nvim_create_user_command("StarChatFix", function(cmd)
  starchat().fix(cmd.line1, cmd.line2)
end, { range = true, desc = "StarChat: fix the selected lines in place" })

vim.api.nvim_create_user_command("StarChatStop", function()
  starchat().stop()
end, { desc = "StarChat: stop the running answer" })

vim.api.nvim_create_user_command("StarChatNew", function()
  starchat().new()
end, { desc = "StarChat: start a new conversation" })

vim.api.nvim_create_user_command("StarChatHistory", function()
  starchat().history()
end, { desc = "StarChat: pick an earlier conversation" })

vim.api.nvim_create_user_command("StarChatClearFeedback", function()
  starchat().clear_feedback()
end, { desc = "StarChat: delete the feedback log of this workspace" })
