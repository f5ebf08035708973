-- Minimal init for headless tests: this plugin only, no user config, nothing from the network.
-- nvim --headless -u editors/nvim/tests/minimal_init.lua
local here = debug.getinfo(1, "S").source:sub(2)
local plugin_root = vim.fn.fnamemodify(here, ":p:h:h")
vim.opt.runtimepath = { plugin_root, vim.env.VIMRUNTIME }
vim.opt.packpath = { vim.env.VIMRUNTIME }
vim.g.loaded_netrwPlugin = 1
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"
vim.opt.more = false
-- `-u FILE` leaves filetype detection off; FileType autocmds (which attach the server) need it.
vim.cmd("filetype plugin on")
