{{/*
Names and labels, the capability set, the paths inside the container, and the checks that
values.schema.json cannot express.
*/}}

{{- define "capture-daemon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "capture-daemon.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "capture-daemon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "capture-daemon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capture-daemon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "capture-daemon.labels" -}}
helm.sh/chart: {{ include "capture-daemon.chart" . }}
{{ include "capture-daemon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "capture-daemon.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The only capabilities the daemon holds (README.md says why each one):
BPF and PERFMON load the programs and attach the raw tracepoints; SYS_PTRACE and
DAC_READ_SEARCH read /proc/<pid>/fd of captured processes that run as other users or hold
capabilities the daemon lacks. SYS_RESOURCE only when legacyMemlock is set.
*/}}
{{- define "capture-daemon.capabilities" -}}
- BPF
- PERFMON
- SYS_PTRACE
- DAC_READ_SEARCH
{{- if .Values.legacyMemlock }}
- SYS_RESOURCE
{{- end }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "capture-daemon.configDir" -}}/etc/capture-daemon/config{{- end }}
{{- define "capture-daemon.cgroupDir" -}}/host/sys/fs/cgroup{{- end }}
{{- define "capture-daemon.tokenDir" -}}/var/run/secrets/capture-daemon/token{{- end }}
{{- define "capture-daemon.caDir" -}}/etc/capture-daemon/collector-ca{{- end }}
{{- define "capture-daemon.clientTlsDir" -}}/var/run/secrets/capture-daemon/client-tls{{- end }}
{{- define "capture-daemon.spoolDir" -}}/var/spool/capture-daemon{{- end }}

{{/* Combinations of values the schema cannot reject on its own. */}}
{{- define "capture-daemon.validate" -}}
{{- $c := .Values.collector }}
{{- if and $c.ca.secretName $c.ca.configMapName }}
{{- fail "collector.ca: set secretName or configMapName, not both" }}
{{- end }}
{{- if not $c.endpoint }}
{{- if or $c.tokenSecret.name $c.ca.secretName $c.ca.configMapName $c.clientCertSecret $c.insecure $c.spool.hostPath }}
{{- fail "collector.endpoint is empty but other collector.* values are set: set collector.endpoint (https://HOST:PORT) or remove them" }}
{{- end }}
{{- else if not (or $c.tokenSecret.name $c.clientCertSecret) }}
{{- fail "collector.endpoint needs collector.tokenSecret.name or collector.clientCertSecret: the collector authenticates every daemon" }}
{{- end }}
{{- end }}
