-- A pipeline that waits: what the host examples run to show they sleep
-- while it does (host_epoll.c, luv_host.lua).
local sl = require "sluice"
return sl.pipeline{ name = "nap",
  sl.step{ name = "nap", run = function(x, ctx) ctx:sleep(0.3); return { rested = x } end } }
