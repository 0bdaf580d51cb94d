-- wrk script: POST pre-signed conversion callbacks, one line per request from
-- the file named by env CALLBACKS ("<signature>\t<body>"), round robin.
local lines = {}
for line in io.lines(os.getenv("CALLBACKS")) do
  local tab = line:find("\t", 1, true)
  lines[#lines + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
end
local i = 0
request = function()
  i = i % #lines + 1
  local l = lines[i]
  return wrk.format("POST", "/v1/conversions", {
    ["Content-Type"] = "application/json",
    ["Linkloop-Merchant"] = "bench-merchant",
    ["Linkloop-Signature"] = l[1],
  }, l[2])
end
local codes = {}
response = function(status)
  codes[status] = (codes[status] or 0) + 1
end
done = function()
  for k, v in pairs(codes) do io.write(string.format("status %d: %d\n", k, v)) end
end
