std = "max"
max_line_length = 110
files["spec"] = { std = "+busted" }
files["spec/emulator"] = { read_globals = { "ngx" } }
files["spec/openresty"] = { globals = { "ngx" } }
files["examples/openresty"] = { globals = { "ngx" } }
exclude_files = { "build", "userlist" }
