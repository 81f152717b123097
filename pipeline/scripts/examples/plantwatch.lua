-- Plant watch: every minute, sums the inverters' AC power (tag acPower), keeps the day's peak
-- across restarts (wd.save), logs both, and raises a script alarm when a device leaves the `ok`
-- state. RPC: plantwatch.summary {} answers {"power", "inverters", "peakToday", "day"}.
header = { version = "1.0", label = "Plant watch", name = "plantwatch" }
local PERIOD_S = 60
local peak = wd.load("peak") or { day = "", watts = 0 }
local states = {}

local function total_power()
  local watts, inverters = 0, 0
  for _, row in ipairs(wd.getTag("acPower")) do
    if row.value ~= nil then
      watts = watts + row.value
      inverters = inverters + 1
    end
  end
  return watts, inverters
end

local function watch()
  for _, device in ipairs(wd.devices()) do
    if states[device.name] == "ok" and device.state ~= "ok" then
      wd.alarm(device.name .. " is " .. device.state)
    end
    states[device.name] = device.state
  end
  local watts, inverters = total_power()
  local day = os.date("!%Y-%m-%d", math.floor(wd.now()))
  if day ~= peak.day then peak = { day = day, watts = 0 } end
  if watts > peak.watts then
    peak.watts = watts
    wd.save("peak", peak)
  end
  wd.log(string.format("power %d W from %d inverters; peak today %d W", watts, inverters,
                       peak.watts))
end

function wsInit()
  wd.every(PERIOD_S, watch)
end

function summary()
  local watts, inverters = total_power()
  return { power = watts, inverters = inverters, peakToday = peak.watts, day = peak.day }
end
