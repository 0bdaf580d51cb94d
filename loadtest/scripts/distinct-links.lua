-- wrk script: GET a random tracked link per request from the file named by env LINKS
-- (one link per line, full URL or path; one line = the same link every time).
-- The file is read in init(), which runs in each wrk thread's Lua state only, so the main
-- state does not hold a second copy. Prints the response status counts at the end.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  paths = {}
  for line in io.lines(os.getenv("LINKS")) do
    paths[#paths + 1] = line:match("^https?://[^/]+(/.*)$") or line
  end
  n = #paths
  codes = {}
  math.randomseed(os.time())
end

request = function()
  return wrk.format(nil, paths[math.random(n)])
end

response = function(status)
  codes[status] = (codes[status] or 0) + 1
end

done = function()
  local total = {}
  for _, t in ipairs(threads) do
    io.write(string.format("links loaded: %d\n", t:get("n")))
    for k, v in pairs(t:get("codes")) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("status %d: %d\n", k, v))
  end
end
