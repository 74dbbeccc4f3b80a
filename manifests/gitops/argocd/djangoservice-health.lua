-- Argo CD health of a DjangoService (resource.customizations.health.djangoscale.io_DjangoService).
-- Reads only what the operator writes in status: the Ready/Progressing/Degraded conditions and
-- observedGeneration. A status about an older generation says nothing about the current spec,
-- so it is Progressing until the operator has seen the latest edit.
local hs = { status = "Progressing", message = "Waiting for the djangoscale operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end

local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  return { status = "Degraded", message = describe(degraded) }
end

local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end

-- Not ready and not failed: a rollout, a scale-up or the first reconcile is under way.
local progressing = conditions["Progressing"]
if progressing ~= nil and progressing.status == "True" then
  hs.message = describe(progressing)
elseif ready ~= nil then
  hs.message = describe(ready)
end
return hs
