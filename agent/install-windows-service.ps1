# Installs the npuctl agent as a scheduled task that starts at boot on a Windows 11 ARM64 Copilot+ PC.
# UNTESTED: written for Windows, never run on the Linux build hosts where npuctl is developed.
# Run from an elevated PowerShell:  .\install-windows-service.ps1 -Python "C:\Python312-arm64\python.exe"
param(
    [string]$Python = "python.exe",
    [string]$Root = "$env:ProgramData\npuctl",
    [string]$Listen = "127.0.0.1:8765"
)
$ErrorActionPreference = "Stop"

New-Item -ItemType Directory -Force -Path "$Root\manifests", "$Root\state", "$Root\cache" | Out-Null
& $Python -m venv "$Root\venv"
& "$Root\venv\Scripts\pip.exe" install --upgrade npuctl

$config = @"
manifests: ['$($Root -replace '\\','/')/manifests']
listen: $Listen
state: '$($Root -replace '\\','/')/state'
cache: '$($Root -replace '\\','/')/cache'
"@
Set-Content -Path "$Root\agent.yaml" -Value $config -Encoding UTF8

# The state folder holds the API token: SYSTEM and Administrators only.
icacls "$Root\state" /inheritance:r /grant:r "SYSTEM:(OI)(CI)F" "Administrators:(OI)(CI)F" | Out-Null

$action = New-ScheduledTaskAction -Execute "$Root\venv\Scripts\npuctl.exe" -Argument "agent --config `"$Root\agent.yaml`""
$trigger = New-ScheduledTaskTrigger -AtStartup
$settings = New-ScheduledTaskSettingsSet -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) -ExecutionTimeLimit 0
Register-ScheduledTask -TaskName "npuctl-agent" -Action $action -Trigger $trigger -Settings $settings `
    -User "SYSTEM" -RunLevel Highest -Force | Out-Null
Start-ScheduledTask -TaskName "npuctl-agent"
Write-Host "npuctl agent installed; status: npuctl get (agent on http://$Listen)"
