-- Export limiting (docs/behaviour.md §9.5): a producer's Linky (standard mode) reports injected
-- power as SINSTI (VA). Every inverter's limit (tag cmdPwrPercent = SunSpec 123 WMaxLimPct, the
-- scale factor applied by the gateway) goes down above the limit, slowly up well below it, and to
-- 0 when the meter is silent. RPC: exportlimit.setLimit {"va": 25000}.
header = { version = 1.0, label = "Export limitation", name = "exportlimit" }
local limitVA = wd.load("limitVA") or 30000
local pct, misses = 100, 0

local function control()
  local export = wd.get("Linky", "SINSTI")          -- VA injected; nil if stale
  if export == nil then
    misses = misses + 1
    if misses >= 3 then pct = 0 end                 -- meter silent 30 s: stop exporting
  else
    misses = 0
    if export > limitVA then pct = math.max(0, pct - 10)
    elseif export < 0.9 * limitVA then pct = math.min(100, pct + 2) end
  end
  local r = wd.setTag("cmdPwrPercent", pct)
  for dev, err in pairs(r.rejected) do wd.log("not written to " .. dev .. ": " .. err) end
end

function wsInit()
  wd.setTag("WMaxLimPct_Ena", 1)                    -- enable limiting on every inverter
  wd.every(10, control)
end

function setLimit(p)                                -- RPC exportlimit.setLimit
  if type(p.va) ~= "number" or p.va < 0 then error("va must be a number >= 0", 0) end
  limitVA = p.va
  wd.save("limitVA", limitVA)
  return { limitVA = limitVA, pct = pct }
end
