{{/*
Named templates of the startgate chart. The public ones, for your own workloads:

  startgate.initContainers   both startgate init containers, in their order (init, then sidecar)
  startgate.initContainer    the `startgate init` init container alone
  startgate.sidecar          the `startgate watch` native sidecar alone
  startgate.appStartupProbe  a startupProbe for the app container, on the sidecar's /startupz
  startgate.volumes          the pod volumes the containers above mount

Each takes the root context (`.`): the values are `.Values.startgate` when that exists (this
chart as a dependency of yours), else `.Values` (this chart's own templates). For a dependency
with an alias, pass a dict: (dict "root" . "values" .Values.ALIAS).
*/}}

{{/* The startgate values of a public template's context, as YAML (read back with fromYaml). */}}
{{- define "startgate.valuesYaml" -}}
{{- if hasKey . "root" -}}
{{- if hasKey . "values" -}}
{{- toYaml .values -}}
{{- else -}}
{{- include "startgate.valuesYaml" .root -}}
{{- end -}}
{{- else if hasKey .Values "startgate" -}}
{{- toYaml .Values.startgate -}}
{{- else -}}
{{- toYaml .Values -}}
{{- end -}}
{{- end -}}

{{/* `<release>-startgate` (or fullnameOverride), at most 63 characters. Takes (dict "v" "root"). */}}
{{- define "startgate.fullname" -}}
{{- $v := .v -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "startgate" $v.nameOverride -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of this chart's own resources. Takes (dict "v" "root"). */}}
{{- define "startgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ default "startgate" .v.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* The image of a startgate container: its own fields, falling back to `image`. Takes (dict "v" "own"). */}}
{{- define "startgate.image" -}}
{{- $own := .own | default dict -}}
{{- $repository := default .v.image.repository $own.repository -}}
{{- $tag := default .v.image.tag $own.tag -}}
image: {{ printf "%s:%s" $repository (toString $tag) | quote }}
imagePullPolicy: {{ default .v.image.pullPolicy $own.pullPolicy }}
{{- end -}}

{{/* The name of the migrations ConfigMap. Takes (dict "v" "root"). */}}
{{- define "startgate.migrationsConfigMap" -}}
{{- if .v.migrations.configMap.name -}}
{{- .v.migrations.configMap.name -}}
{{- else -}}
{{- printf "%s-migrations" (include "startgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The environment of a startgate container. Takes (dict "v" "kind"), kind being "init" (the init
container and the hook Job: database, migrations, backups) or "watch" (the sidecar: PORT).
*/}}
{{- define "startgate.env" -}}
{{- $v := .v -}}
- name: STARTGATE_LISTEN
  value: {{ printf "0.0.0.0:%d" (int $v.endpoint.port) | quote }}
{{- range $name, $value := $v.env }}
{{- if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- if eq .kind "init" }}
{{- if $v.database.asFile }}
- name: DATABASE_URL_FILE
  value: {{ printf "%s/%s" $v.database.mountPath $v.database.urlKey | quote }}
{{- if $v.database.directUrlKey }}
- name: STARTGATE_DATABASE_URL_FILE
  value: {{ printf "%s/%s" $v.database.mountPath $v.database.directUrlKey | quote }}
{{- end }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.urlKey | quote }}
{{- if $v.database.directUrlKey }}
- name: STARTGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.directUrlKey | quote }}
{{- end }}
{{- end }}
- name: STARTGATE_MIGRATIONS
  value: {{ $v.migrations.path | quote }}
- name: STARTGATE_BACKUP_DIR
  value: {{ $v.backup.dir | quote }}
{{- else }}
- name: PORT
  value: {{ int $v.app.port | toString | quote }}
{{- end }}
{{- if $v.statusToken.existingSecret }}
- name: STARTGATE_STATUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.statusToken.existingSecret | quote }}
      key: {{ $v.statusToken.key | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- /* The container's own extras, after the shared ones (a later entry wins in Kubernetes). */}}
{{- $own := ternary $v.initContainer.extraEnv $v.sidecar.extraEnv (eq .kind "init") }}
{{- with $own }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The volume mounts of the init container and the hook Job. Takes (dict "v"). */}}
{{- define "startgate.initVolumeMounts" -}}
{{- $v := .v -}}
- name: startgate-backups
  mountPath: {{ $v.backup.dir | quote }}
- name: startgate-tmp
  mountPath: /tmp
{{- if eq $v.migrations.source "configMap" }}
- name: startgate-migrations
  mountPath: {{ $v.migrations.path | quote }}
  readOnly: true
{{- end }}
{{- if $v.database.asFile }}
- name: startgate-database
  mountPath: {{ $v.database.mountPath | quote }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The container securityContext of the sidecar, which shareProcessNamespace may change. Takes (dict "v"). */}}
{{- define "startgate.sidecarSecurityContext" -}}
{{- $v := .v -}}
{{- $sc := deepCopy $v.securityContext -}}
{{- if $v.shareProcessNamespace.enabled -}}
{{- if eq $v.shareProcessNamespace.access "ptrace" -}}
{{- $_ := set $sc "runAsNonRoot" false -}}
{{- $_ := set $sc "runAsUser" 0 -}}
{{- $_ := set $sc "runAsGroup" 0 -}}
{{- $_ := set $sc "capabilities" (dict "drop" (list "ALL") "add" (list "SYS_PTRACE")) -}}
{{- else -}}
{{- $_ := set $sc "runAsUser" (int $v.shareProcessNamespace.appUser) -}}
{{- $_ := set $sc "runAsGroup" (int $v.shareProcessNamespace.appGroup) -}}
{{- end -}}
{{- end -}}
{{- toYaml $sc -}}
{{- end -}}

{{/* The `startgate init` container spec. Takes (dict "v"). */}}
{{- define "startgate.initContainerSpec" -}}
{{- $v := .v -}}
name: {{ $v.initContainer.name }}
{{ include "startgate.image" (dict "v" $v "own" $v.initContainer.image) }}
args: ["init"]
env:
{{ include "startgate.env" (dict "v" $v "kind" "init") }}
# It serves the endpoint (STARTGATE_LISTEN) while it migrates. No port is declared here: the
# sidecar, which starts once this container has exited, declares the same one.
volumeMounts:
{{ include "startgate.initVolumeMounts" (dict "v" $v) }}
{{- with $v.initContainer.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
resources:
{{ toYaml $v.initContainer.resources | indent 2 }}
securityContext:
{{ toYaml $v.securityContext | indent 2 }}
terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/* The `startgate init` init container (a list item). */}}
{{- define "startgate.initContainer" -}}
{{- $v := fromYaml (include "startgate.valuesYaml" .) -}}
- {{ include "startgate.initContainerSpec" (dict "v" $v) | indent 2 | trim }}
{{- end -}}

{{/* The `startgate watch` native sidecar (a list item). */}}
{{- define "startgate.sidecar" -}}
{{- $v := fromYaml (include "startgate.valuesYaml" .) -}}
{{- $port := int $v.endpoint.port -}}
- name: {{ $v.sidecar.name }}
  {{- include "startgate.image" (dict "v" $v "own" $v.sidecar.image) | nindent 2 }}
  args: ["watch"]
  # A native sidecar: started in order with the init containers, kept running beside the app,
  # stopped after it.
  restartPolicy: Always
  env:
    {{- include "startgate.env" (dict "v" $v "kind" "watch") | nindent 4 }}
  ports:
    - name: startgate
      containerPort: {{ $port }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /livez
      port: {{ $port }}
    {{- toYaml $v.sidecar.startupProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $port }}
    {{- toYaml $v.sidecar.readinessProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $port }}
    {{- toYaml $v.sidecar.livenessProbe | nindent 4 }}
  {{- with $v.sidecar.extraVolumeMounts }}
  volumeMounts:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $v.sidecar.resources | nindent 4 }}
  securityContext:
    {{- include "startgate.sidecarSecurityContext" (dict "v" $v) | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/* Both init containers, init first (it may serve its endpoint while migrating), then the sidecar. */}}
{{- define "startgate.initContainers" -}}
{{- $v := fromYaml (include "startgate.valuesYaml" .) -}}
{{- $items := list -}}
{{- if $v.initContainer.enabled -}}
{{- $items = append $items (include "startgate.initContainer" .) -}}
{{- end -}}
{{- if $v.sidecar.enabled -}}
{{- $items = append $items (include "startgate.sidecar" .) -}}
{{- end -}}
{{- join "\n" $items -}}
{{- end -}}

{{/* The app container's startupProbe: startgate's /startupz, 200 once the app passed its probe. */}}
{{- define "startgate.appStartupProbe" -}}
{{- $v := fromYaml (include "startgate.valuesYaml" .) -}}
httpGet:
  path: /startupz
  port: {{ int $v.endpoint.port }}
{{ toYaml $v.appStartupProbe }}
{{- end -}}

{{/* The pod volumes the startgate containers mount (list items). */}}
{{- define "startgate.volumes" -}}
{{- $v := fromYaml (include "startgate.valuesYaml" .) -}}
{{- $root := . -}}
{{- if hasKey . "root" }}{{ $root = .root }}{{ end -}}
- name: startgate-backups
{{- if $v.backup.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.backup.existingClaim | quote }}
{{- else }}
  emptyDir:
    sizeLimit: {{ $v.backup.sizeLimit | quote }}
{{- end }}
- name: startgate-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq $v.migrations.source "configMap" }}
- name: startgate-migrations
  configMap:
    name: {{ include "startgate.migrationsConfigMap" (dict "v" $v "root" $root) | quote }}
{{- end }}
{{- if $v.database.asFile }}
- name: startgate-database
  secret:
    secretName: {{ $v.database.existingSecret | quote }}
    # Readable by the container's user whatever the pod's fsGroup; the pod is its only reader.
    defaultMode: 0444
{{- end }}
{{- end -}}
