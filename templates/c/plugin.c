// {{name}}: a plugd plugin in C (made with `plugd new {{name}} --lang c`).
//
// bindings/ holds the contract's C bindings (wit-bindgen's C generator; `plugd bindings c`
// writes them again). Exports are `exports_plugd_plugin_guest_*`, host calls
// `plugd_plugin_<interface>_*`. Ownership, as wit-bindgen defines it: strings and lists passed
// INTO an export are the plugin's to free; what an export returns (`ret`, `err`) must be
// malloc'd (the bindings free it after the call); what the plugin passes to a host call stays
// its own, and what a host call returns is the plugin's to free.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/plugin.h"

// Per instance: state every call must see lives in storage.
static char greeting[128] = "Hello";

// A borrowed string view of a C literal or buffer (for host calls).
static plugin_string_t view(const char *s) {
  plugin_string_t r;
  plugin_string_set(&r, s);
  return r;
}

// A NUL-terminated, malloc'd copy of a string.
static char *cstr(const uint8_t *ptr, size_t len) {
  char *s = malloc(len + 1);
  memcpy(s, ptr, len);
  s[len] = 0;
  return s;
}

// The message of a host error, as an export's error; frees the host error.
static bool host_failed(plugd_plugin_types_host_error_t *herr, plugin_string_t *err) {
  char *msg = cstr(herr->val.denied.ptr, herr->val.denied.len);  // every variant holds a string
  plugin_string_dup(err, msg);
  free(msg);
  plugd_plugin_types_host_error_free(herr);
  return false;
}

static void info(const char *message) {
  plugin_string_t m = view(message);
  plugd_plugin_log_list_pair_t fields = {NULL, 0};
  plugd_plugin_log_log(PLUGD_PLUGIN_TYPES_LOG_LEVEL_INFO, &m, &fields);
}

// Appends `s` to `out` as JSON string content (quotes, backslashes and control characters escaped).
static void json_escape(char *out, size_t cap, const char *s) {
  size_t n = strlen(out);
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = c; }
    else if (c < 0x20) { n += snprintf(out + n, cap - n, "\\u%04x", c); }
    else { out[n++] = c; }
  }
  out[n] = 0;
}

// The string value of "key" in a flat JSON object (enough for the config of this template;
// use a JSON library for more).
static int json_string_field(const char *json, const char *key, char *out, size_t cap) {
  char pattern[96];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (!p) return 0;
  p = strchr(p + strlen(pattern), ':');
  if (!p) return 0;
  while (*++p == ' ') {}
  if (*p != '"') return 0;
  size_t n = 0;
  for (p++; *p && *p != '"' && n + 1 < cap; p++) {
    if (*p == '\\' && p[1]) p++;
    out[n++] = *p;
  }
  out[n] = 0;
  return 1;
}

// A malloc'd response with a JSON body.
static plugd_plugin_types_response_t json_response(uint16_t status, const char *body) {
  plugd_plugin_types_response_t r;
  r.status = status;
  r.headers.len = 1;
  r.headers.ptr = malloc(sizeof(plugd_plugin_types_pair_t));
  plugin_string_dup(&r.headers.ptr[0].f0, "content-type");
  plugin_string_dup(&r.headers.ptr[0].f1, "application/json");
  r.body.len = strlen(body);
  r.body.ptr = malloc(r.body.len ? r.body.len : 1);
  memcpy(r.body.ptr, body, r.body.len);
  return r;
}

static void read_config(plugin_string_t *config) {
  char *json = cstr(config->ptr, config->len);
  if (!json_string_field(json, "greeting", greeting, sizeof greeting)) strcpy(greeting, "Hello");
  free(json);
  plugin_string_free(config);
}

void exports_plugd_plugin_guest_metadata(exports_plugd_plugin_guest_plugin_metadata_t *ret) {
  plugin_string_dup(&ret->name, "{{name}}");
  plugin_string_dup(&ret->version, "0.1.0");
  plugin_string_dup(&ret->sdk, "wit-bindgen-c (clang)");
}

// Runs on every instance with the validated config (JSON; defaults from plugin.yaml applied).
bool exports_plugd_plugin_guest_init(plugin_string_t *config, plugin_string_t *err) {
  read_config(config);
  plugd_plugin_types_host_error_t herr;
{{#route}}
  // Served at /plugins/{{name}}/hello; needs the `router` permission.
  plugin_string_t method = view("GET"), path = view("/hello");
  plugd_plugin_registry_route_options_t options = { .required_roles = { NULL, 0 } };
  if (!plugd_plugin_registry_register_route(&method, &path, &options, &herr)) return host_failed(&herr, err);
{{/route}}
  plugin_string_t topic = view("{{name}}.ping"), service = view("greeter");
  if (!plugd_plugin_registry_subscribe(&topic, &herr)) return host_failed(&herr, err);
  if (!plugd_plugin_registry_export_service(&service, &herr)) return host_failed(&herr, err);
  info("ready");
  return true;
}

bool exports_plugd_plugin_guest_start(plugin_string_t *err) { return true; }
bool exports_plugd_plugin_guest_stop(plugin_string_t *err) { return true; }
bool exports_plugd_plugin_guest_cleanup(plugin_string_t *err) { return true; }

bool exports_plugd_plugin_guest_on_config_change(plugin_string_t *config, plugin_string_t *err) {
  read_config(config);
  return true;
}

void exports_plugd_plugin_guest_health_check(exports_plugd_plugin_guest_health_t *ret) {
  ret->tag = PLUGD_PLUGIN_TYPES_HEALTH_HEALTHY;
}

static bool on_hook(exports_plugd_plugin_guest_hook_type_t hook,
                                        exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                        exports_plugd_plugin_guest_action_t *ret, plugin_string_t *err) {
  plugd_plugin_types_host_error_t herr;
  ret->tag = PLUGD_PLUGIN_TYPES_ACTION_CONTINUE;
{{#hook_pre_request}}
  if (hook == PLUGD_PLUGIN_TYPES_HOOK_TYPE_PRE_REQUEST) {
    plugin_string_t block = view("x-{{name}}-block"), value;
    if (plugd_plugin_http_method_exchange_header(exchange, &block, &value)) {
      plugin_string_free(&value);
      ret->tag = PLUGD_PLUGIN_TYPES_ACTION_RESPOND;
      ret->val.respond = json_response(403, "{\"error\":\"blocked by {{name}}\"}");
      return true;
    }
    plugin_string_t name = view("x-{{name}}-seen"), one = view("1");
    if (!plugd_plugin_http_method_exchange_set_header(exchange, &name, &one, &herr)) return host_failed(&herr, err);
    return true;
  }
{{/hook_pre_request}}
{{#hook_post_request}}
  if (hook == PLUGD_PLUGIN_TYPES_HOOK_TYPE_POST_REQUEST) {
    plugin_string_t name = view("x-{{name}}"), value = view("post_request");
    if (!plugd_plugin_http_method_exchange_set_response_header(exchange, &name, &value, &herr)) return host_failed(&herr, err);
    return true;
  }
{{/hook_post_request}}
{{#hook_pre_response}}
  if (hook == PLUGD_PLUGIN_TYPES_HOOK_TYPE_PRE_RESPONSE) {
    plugin_string_t name = view("x-{{name}}"), value = view("pre_response");
    if (!plugd_plugin_http_method_exchange_set_response_header(exchange, &name, &value, &herr)) return host_failed(&herr, err);
    return true;
  }
{{/hook_pre_response}}
  info("a hook ran");
  return true;
}

// The exchange is a borrowed handle: the plugin must drop it before returning.
bool exports_plugd_plugin_guest_on_hook(exports_plugd_plugin_guest_hook_type_t hook,
                                        exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                        exports_plugd_plugin_guest_action_t *ret, plugin_string_t *err) {
  bool ok = on_hook(hook, exchange, ret, err);
  plugd_plugin_http_exchange_drop_borrow(exchange);
  return ok;
}

static bool handle_request(plugin_string_t *route,
                                               exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                               exports_plugd_plugin_guest_response_t *ret, plugin_string_t *err) {
  char *which = cstr(route->ptr, route->len);
  plugin_string_free(route);
{{#route}}
  if (strcmp(which, "/hello") == 0) {
    free(which);
    plugd_plugin_types_host_error_t herr;
    // ?name=, or "world"
    plugin_string_t param = view("name"), value;
    bool has_name = plugd_plugin_http_method_exchange_query_param(exchange, &param, &value);
    char *name = has_name ? cstr(value.ptr, value.len) : cstr((const uint8_t *)"world", 5);
    if (has_name) plugin_string_free(&value);
    // The count, kept in storage.
    plugin_string_t key = view("count");
    plugin_option_list_u8_t stored;
    if (!plugd_plugin_storage_get(&key, &stored, &herr)) { free(name); return host_failed(&herr, err); }
    long count = 1;
    if (stored.is_some) {
      char *text = cstr(stored.val.ptr, stored.val.len);
      count = atol(text) + 1;
      free(text);
      plugin_option_list_u8_free(&stored);
    }
    char number[32];
    snprintf(number, sizeof number, "%ld", count);
    plugin_list_u8_t bytes = {(uint8_t *)number, strlen(number)};
    if (!plugd_plugin_storage_set(&key, &bytes, &herr)) { free(name); return host_failed(&herr, err); }
    // plugd_custom_greetings_total at /metrics, the {{name}}.greeted event, a log line.
    plugin_string_t metric = view("greetings");
    plugd_plugin_metrics_list_pair_t labels = {NULL, 0};
    if (!plugd_plugin_metrics_counter_add(&metric, 1.0, &labels, &herr)) { free(name); return host_failed(&herr, err); }
    plugin_string_t topic = view("{{name}}.greeted");
    plugin_list_u8_t payload = {(uint8_t *)name, strlen(name)};
    if (!plugd_plugin_events_publish(&topic, &payload, &herr)) { free(name); return host_failed(&herr, err); }
    plugd_plugin_log_pair_t field = {view("name"), view(name)};
    plugd_plugin_log_list_pair_t fields = {&field, 1};
    plugin_string_t message = view("greeted");
    plugd_plugin_log_log(PLUGD_PLUGIN_TYPES_LOG_LEVEL_INFO, &message, &fields);

    char body[512] = "{\"message\":\"";
    json_escape(body, sizeof body, greeting);
    strncat(body, ", ", sizeof body - strlen(body) - 1);
    json_escape(body, sizeof body, name);
    snprintf(body + strlen(body), sizeof body - strlen(body), "!\",\"count\":%ld}", count);
    free(name);
    *ret = json_response(200, body);
    return true;
  }
{{/route}}
  char message[256];
  snprintf(message, sizeof message, "no handler for route %s", which);
  free(which);
  plugin_string_dup(err, message);
  return false;
}

// The exchange is a borrowed handle: the plugin must drop it before returning.
bool exports_plugd_plugin_guest_handle_request(plugin_string_t *route,
                                               exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                               exports_plugd_plugin_guest_response_t *ret, plugin_string_t *err) {
  bool ok = handle_request(route, exchange, ret, err);
  plugd_plugin_http_exchange_drop_borrow(exchange);
  return ok;
}

bool exports_plugd_plugin_guest_on_request(plugin_string_t *middleware,
                                           exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                           exports_plugd_plugin_guest_action_t *ret, plugin_string_t *err) {
  plugin_string_free(middleware);
  plugd_plugin_http_exchange_drop_borrow(exchange);
  ret->tag = PLUGD_PLUGIN_TYPES_ACTION_CONTINUE;
  return true;
}

bool exports_plugd_plugin_guest_on_response(plugin_string_t *middleware,
                                            exports_plugd_plugin_guest_borrow_exchange_t exchange,
                                            plugin_string_t *err) {
  plugin_string_free(middleware);
  plugd_plugin_http_exchange_drop_borrow(exchange);
  return true;
}

bool exports_plugd_plugin_guest_on_event(plugin_string_t *topic, plugin_list_u8_t *payload,
                                         plugin_string_t *source, plugin_string_t *err) {
  bool ok = true;
  const char *ping = "{{name}}.ping";
  if (topic->len == strlen(ping) && memcmp(topic->ptr, ping, topic->len) == 0) {
    plugd_plugin_types_host_error_t herr;
    plugin_string_t key = view("last-ping");
    if (!plugd_plugin_storage_set(&key, payload, &herr)) ok = host_failed(&herr, err);
  }
  plugin_string_free(topic);
  plugin_list_u8_free(payload);
  plugin_string_free(source);
  return ok;
}

// The exported service `greeter`.
bool exports_plugd_plugin_guest_call_service(plugin_string_t *service, plugin_string_t *method,
                                             plugin_list_u8_t *payload, plugin_string_t *caller,
                                             plugin_list_u8_t *ret, plugin_string_t *err) {
  char *s = cstr(service->ptr, service->len), *m = cstr(method->ptr, method->len);
  char *who = cstr(payload->ptr, payload->len);
  bool ok = strcmp(s, "greeter") == 0 && strcmp(m, "greet") == 0;
  char out[512];
  if (ok) {
    snprintf(out, sizeof out, "%s, %s!", greeting, who);
    ret->len = strlen(out);
    ret->ptr = malloc(ret->len);
    memcpy(ret->ptr, out, ret->len);
  } else {
    snprintf(out, sizeof out, "unknown method %s.%s", s, m);
    plugin_string_dup(err, out);
  }
  free(s); free(m); free(who);
  plugin_string_free(service); plugin_string_free(method);
  plugin_list_u8_free(payload); plugin_string_free(caller);
  return ok;
}

bool exports_plugd_plugin_guest_on_tick(plugin_string_t *timer, plugin_string_t *err) {
  plugin_string_free(timer);
  return true;
}

bool exports_plugd_plugin_guest_run_command(plugin_string_t *command, plugin_list_string_t *args,
                                            plugin_string_t *ret, plugin_string_t *err) {
  plugin_string_free(command);
  plugin_list_string_free(args);
  plugin_string_dup(err, "unknown command");
  return false;
}
