// {{name}}: a plugd plugin in JavaScript (made with `plugd new {{name}} --lang js`).
//
// Built by build.sh with componentize-js into a component that implements the contract in
// wit/plugin.wit. Each WIT interface is a module 'plugd:plugin/<interface>@0.1.0'; kebab-case
// names become camelCase; a `result<T, string>` is returned (ok) or thrown (err); enums are
// strings ('pre-request'); variants are { tag, val }; list<u8> is a Uint8Array.
import { log } from 'plugd:plugin/log@0.1.0';
import { counterAdd } from 'plugd:plugin/metrics@0.1.0';
import { get, set } from 'plugd:plugin/storage@0.1.0';
import { registerRoute, subscribe, exportService } from 'plugd:plugin/registry@0.1.0';
import { publish } from 'plugd:plugin/events@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
// Per instance: state every call must see lives in storage.
let greeting = 'Hello';

function json(status, value) {
  return {
    status,
    headers: [['content-type', 'application/json']],
    body: encoder.encode(JSON.stringify(value)),
  };
}

export const guest = {
  metadata() {
    return { name: '{{name}}', version: '0.1.0', sdk: 'componentize-js {{componentize_js}}' };
  },

  // Runs on every instance with the validated config (JSON; defaults from plugin.yaml applied).
  init(config) {
    greeting = JSON.parse(config).greeting ?? 'Hello';
{{#route}}
    // Served at /plugins/{{name}}/hello; needs the `router` permission.
    registerRoute('GET', '/hello', { requiredRoles: [] });
{{/route}}
    subscribe('{{name}}.ping');
    exportService('greeter');
    log('info', 'ready', []);
  },
  start() {},
  stop() {},
  cleanup() {},
  onConfigChange(config) {
    greeting = JSON.parse(config).greeting ?? 'Hello';
  },
  healthCheck() {
    return { tag: 'healthy' };
  },

  onHook(hook, exchange) {
{{#hook_pre_request}}
    if (hook === 'pre-request') {
      if (exchange.header('x-{{name}}-block') !== undefined) {
        return { tag: 'respond', val: json(403, { error: 'blocked by {{name}}' }) };
      }
      exchange.setHeader('x-{{name}}-seen', '1');
      return { tag: 'continue' };
    }
{{/hook_pre_request}}
{{#hook_post_request}}
    if (hook === 'post-request') {
      exchange.setResponseHeader('x-{{name}}', 'post_request');
      return { tag: 'continue' };
    }
{{/hook_post_request}}
{{#hook_pre_response}}
    if (hook === 'pre-response') {
      exchange.setResponseHeader('x-{{name}}', 'pre_response');
      return { tag: 'continue' };
    }
{{/hook_pre_response}}
    log('info', `${hook} hook ran`, []);
    return { tag: 'continue' };
  },

  handleRequest(route, exchange) {
{{#route}}
    if (route === '/hello') {
      const name = exchange.queryParam('name') ?? 'world';
      const stored = get('count');
      const count = (stored === undefined ? 0 : JSON.parse(decoder.decode(stored))) + 1;
      set('count', encoder.encode(JSON.stringify(count)));
      counterAdd('greetings', 1, []);
      publish('{{name}}.greeted', encoder.encode(name));
      log('info', 'greeted', [['name', name]]);
      return json(200, { message: `${greeting}, ${name}!`, count });
    }
{{/route}}
    throw `no handler for route ${route}`;
  },

  onRequest(middleware, exchange) {
    return { tag: 'continue' };
  },
  onResponse(middleware, exchange) {},

  onEvent(topic, payload, source) {
    if (topic === '{{name}}.ping') {
      set('last-ping', payload);
    }
  },

  // The exported service `greeter`.
  callService(service, method, payload, caller) {
    if (service === 'greeter' && method === 'greet') {
      return encoder.encode(`${greeting}, ${decoder.decode(payload)}!`);
    }
    throw `unknown method ${service}.${method}`;
  },

  onTick(timer) {},
  runCommand(command, args) {
    throw `unknown command: ${command}`;
  },
};
