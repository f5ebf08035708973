"""starchat.nvim without a model: options, commands, errors, API hygiene (fast)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from nvim_harness import MINIMAL_INIT, NVIM_PLUGIN, isolated_env, release


def run_lua(nvim: str, tmp_path: Path, lua: str) -> dict:
    """Runs a Lua snippet in headless nvim with the plugin; the snippet returns a table."""
    out = tmp_path / "out.json"
    script = tmp_path / "snippet.lua"
    script.write_text(
        "local ok, value = pcall(function()\n" + lua + "\nend)\n"
        f"local f = io.open({json.dumps(str(out))}, 'w')\n"
        "f:write(vim.json.encode(ok and value or { lua_error = tostring(value) }))\n"
        "f:close()\nvim.cmd('qa!')\n"
    )
    env = isolated_env(tmp_path)
    try:
        proc = subprocess.run(
            [nvim, "--headless", "-u", str(MINIMAL_INIT), "-c", f"luafile {script}"],
            env=env, capture_output=True, text=True, timeout=60,
        )
    finally:
        release(env)
    assert out.exists(), f"nvim wrote no result: {proc.stderr}"
    return json.loads(out.read_text())


def test_setup_deep_merges_over_defaults(nvim, tmp_path):
    result = run_lua(nvim, tmp_path, """
        require("starchat").setup({ cmd = { "my-starchat", "lsp", "--x" },
          settings = { generation = { max_new_tokens = 64 } }, chat = { size = 70 } })
        local o = require("starchat.config").options
        return { cmd = o.cmd, model = o.settings.model, tokens = o.settings.generation.max_new_tokens,
          layout = o.chat.layout, size = o.chat.size, follow = o.chat.follow,
          server = require("starchat.client").server_settings() }
    """)
    assert result["cmd"] == ["my-starchat", "lsp", "--x"]
    assert result["model"] == "default"  # kept from the defaults
    assert result["tokens"] == 64
    assert (result["layout"], result["size"], result["follow"]) == ("vertical", 70, True)
    # Sent under the section `starchat`, empty groups as JSON objects.
    assert result["server"]["starchat"]["generation"] == {"max_new_tokens": 64}
    assert result["server"]["starchat"]["context"] == {}
    assert result["server"]["starchat"]["feedback"] == {"enabled": False}  # the log is off by default


def test_user_commands_exist_and_default_cmd(nvim, tmp_path):
    result = run_lua(nvim, tmp_path, """
        local names = {}
        for name, def in pairs(vim.api.nvim_get_commands({})) do
          if name:match("^StarChat") then names[name] = def.range or "" end
        end
        return { names = names, cmd = require("starchat.config").defaults.cmd }
    """)
    assert set(result["names"]) == {
        "StarChat", "StarChatExplain", "StarChatFix", "StarChatStop", "StarChatNew",
        "StarChatHistory", "StarChatClearFeedback",
    }
    assert result["names"]["StarChatExplain"] == "."  # takes a range, current line by default
    assert result["cmd"] == ["starchat", "lsp"]


def test_bad_options_give_one_sentence(nvim, tmp_path):
    result = run_lua(nvim, tmp_path, """
        local errors = {}
        for _, opts in ipairs({ { cmd = {} }, { chat = { layout = "diagonal" } }, { cmd = "starchat" } }) do
          local ok, err = pcall(require("starchat").setup, opts)
          table.insert(errors, ok and "accepted" or err)
        end
        return { errors = errors }
    """)
    assert result["errors"][0].startswith("starchat: opts.cmd must be")
    assert "layout must be one of" in result["errors"][1]
    assert result["errors"][2].startswith("starchat: opts.cmd must be")


def test_missing_server_is_reported_not_raised(nvim, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    result = run_lua(nvim, tmp_path, f"""
        local messages = {{}}
        vim.notify = function(msg) table.insert(messages, msg) end
        vim.notify_once = vim.notify
        require("starchat").setup({{ cmd = {{ "no-such-starchat-binary", "lsp" }} }})
        vim.cmd.edit({json.dumps(str(src))})
        vim.cmd("1StarChatExplain")
        return {{ messages = messages, clients = #vim.lsp.get_clients({{ name = "starchat" }}) }}
    """)
    assert "lua_error" not in result
    assert result["clients"] == 0
    assert any("no-such-starchat-binary" in m and "not found" in m for m in result["messages"])


def test_chat_buffer_appends_deltas_and_reconciles(nvim, tmp_path):
    result = run_lua(nvim, tmp_path, """
        require("starchat").setup({})
        local chat = require("starchat.chat")
        local buf = chat.buffer("abc123")
        local turn = chat.begin_turn(buf, "hello")
        for _, d in ipairs({ "Hi", " there,\\n", "```python\\nx = 1", "\\n```" }) do chat.add_delta(turn, d) end
        local streamed = chat.reply_text(turn)
        chat.end_turn(turn, "Hi there,\\n```python\\nx = 1\\n```", {})
        local same = chat.reply_text(turn)
        local turn2 = chat.begin_turn(buf, "again")
        chat.add_delta(turn2, "partial")
        chat.end_turn(turn2, "the full reply", { "[stopped]" })
        return { name = vim.api.nvim_buf_get_name(buf), ft = vim.bo[buf].filetype,
          streamed = streamed, same = same, lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false) }
    """)
    assert result["name"] == "starchat://chat/abc123"
    assert result["ft"] == "markdown"
    assert result["streamed"] == "Hi there,\n```python\nx = 1\n```"
    assert result["same"] == result["streamed"]
    text = "\n".join(result["lines"])
    assert text.startswith("## You\n\nhello\n\n## StarChat\n\nHi there,")
    assert "## You\n\nagain\n\n## StarChat\n\nthe full reply\n\n_[stopped]_" in text


def test_no_deprecated_neovim_apis():
    sources = "\n".join(p.read_text() for p in NVIM_PLUGIN.rglob("*.lua"))
    for deprecated in ("vim.loop", "vim.lsp.start_client", "vim.lsp.get_active_clients",
                       "vim.lsp.buf_get_clients"):
        assert deprecated not in sources, deprecated
