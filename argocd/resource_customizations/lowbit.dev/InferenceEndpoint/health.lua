-- Argo CD health check for lowbit.dev/InferenceEndpoint (Lowbit's conditions follow kstatus: Ready summary,
-- abnormal-true Reconciling and Stalled, observedGeneration on status and on each condition).
-- Install: docs/install.md ("Argo CD"). Tested by tests/Lowbit.Chart.Tests with lua5.4 over testdata/.
local hs = {}
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Lowbit operator to pick up the InferenceEndpoint"
  return hs
end
if obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Lowbit operator to observe generation " .. generation
  return hs
end
local ready = nil
local stalled = nil
local reconciling = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Stalled" then
      stalled = condition
    elseif condition.type == "Reconciling" then
      reconciling = condition
    end
  end
end
local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. condition.message
  end
  return text
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
if ready ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Lowbit operator to observe generation " .. generation
  return hs
end
if obj.spec ~= nil and obj.spec.replicas == 0 and (ready == nil or ready.status ~= "True") then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
elseif reconciling ~= nil then
  hs.message = describe(reconciling)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
