-- Argo CD health check for ltx-training.io/LtxExtendTraining.
-- Enable it in argocd-cm:
--   resource.customizations.health.ltx-training.io_LtxExtendTraining: |
--     <this file>
local health = {}
if obj.status == nil or obj.status.phase == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator"
  return health
end
local phase = obj.status.phase
local message = ""
local waiting = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Failed" and condition.status == "True" then
      message = (condition.reason or "") .. ": " .. (condition.message or "")
    end
    if condition.type == "Running" and condition.status == "False" then
      waiting = (condition.reason or "") .. ": " .. (condition.message or "")
    end
  end
end
if phase == "Succeeded" then
  health.status = "Healthy"
  health.message = "The LoRA is ready"
elseif phase == "Failed" then
  health.status = "Degraded"
  health.message = message
elseif phase == "Suspended" then
  health.status = "Suspended"
  health.message = "Suspended"
elseif phase == "Pending" and waiting ~= nil then
  health.status = "Progressing"
  health.message = "Pending (" .. waiting .. ")"
else
  health.status = "Progressing"
  local progress = obj.status.progress
  if progress ~= nil and progress.summary ~= nil then
    health.message = phase .. " " .. progress.summary
  else
    health.message = phase
  end
end
return health
