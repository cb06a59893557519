/**
 * Access logs, pure parts: the wire line HAProxy writes → AccessRecord, Consul's templates (Envoy
 * command operators), and the rendered lines (Consul's default JSON keys, typed values, text).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatAccessRecord, formatStartTime, operatorValue, responseFlags } from '../../src/telemetry/access-log-format.js';
import { AccessLineError, parseAccessLine, parseListenerLine, type AccessRecord } from '../../src/telemetry/access-log-record.js';
import {
  AccessLogTemplateError,
  MAX_TEMPLATE_HEADERS,
  checkTemplateHeaders,
  defaultAccessLogFormat,
  parseJsonFormat,
  parseTextFormat,
  templateHeaders,
  unsupportedOperators,
  type AccessLogFormat,
} from '../../src/domain/access-log-template.js';

/** Lines as HAProxy 2.6.12 wrote them for the layout of access-log-wire.ts (captured from a real run). */
const HTTP_LINE =
  'HCAL1 {"f":"upstream_service_default_api_c227a598","ts":"1795486671","ms":"059","th":"0","tw":"1","tc":"2","tt":"9","ci":"127.0.0.1","cp":"50112","fi":"127.0.0.1","fp":"9191","b":"upstream_service_default_api_c227a598_be","s":"node-1_api-sidecar-proxy_1a2b","si":"10.0.0.1","sp":"21000","bi":"10.0.0.9","bp":"40222","rx":"120","tx":"245","st":"----","rc":"0","be":"Success","fe":"Success","cl":"api.default.dc1.internal.example.consul","ti":"3","tR":"1","tr":"4","ta":"8","sc":"200","v":"HTTP\\/1.1","q":{":authority":"api",":method":"GET",":path":"\\/x?y=\\"1\\"","user-agent":"a\\tb \\"c\\" \\u00e9","x-forwarded-for":"-","x-request-id":"req-1"},"r":{}}';
const TCP_LINE =
  'HCAL1 {"f":"upstream_service_default_db_774214e6","ts":"1795486671","ms":"007","th":"0","tw":"0","tc":"1","tt":"1503","ci":"::1","cp":"40000","fi":"::1","fp":"9192","b":"upstream_service_default_db_774214e6_be","s":"node-3_db","si":"10.0.0.3","sp":"21000","bi":"10.0.0.9","bp":"40224","rx":"5","tx":"10000","st":"--","rc":"0","be":"Success","fe":"Success","cl":"db.default.dc1.internal.example.consul"}';
const NOSRV_LINE =
  'HCAL1 {"f":"upstream_x","ts":"1795486671","ms":"100","th":"0","tw":"-1","tc":"-1","tt":"0","ci":"127.0.0.1","cp":"1","fi":"127.0.0.1","fp":"9191","b":"upstream_x_be","s":"<NOSRV>","si":"-","sp":"-","bi":"-","bp":"-","rx":"0","tx":"0","st":"SC","rc":"0","be":"-","fe":"Success","cl":"x.default.dc1.internal.example.consul","ti":"0","tR":"0","tr":"-1","ta":"0","sc":"503","v":"HTTP\\/2.0","q":{},"r":{}}';

const HOST = { hostname: 'host-1' };

function record(over: Partial<AccessRecord> = {}): AccessRecord {
  return { ...parseAccessLine(HTTP_LINE), ...over };
}

describe('parseAccessLine', () => {
  test('an HTTP line: request start, durations, addresses, decoded headers', () => {
    const r = parseAccessLine(HTTP_LINE);
    assert.equal(r.kind, 'request');
    // accept 1795486671.059 + Th 0 + Ti 3
    assert.equal(r.startMs, 1_795_486_671_062);
    assert.equal(r.durationMs, 8);
    assert.equal(r.requestMs, 1);
    assert.equal(r.serverResponseMs, 4);
    assert.equal(r.responseStartMs, 1 + 1 + 2 + 4);
    assert.equal(r.status, 200);
    assert.equal(r.httpVersion, 'HTTP/1.1');
    assert.equal(r.requestHeaders[':path'], '/x?y="1"');
    assert.equal(r.requestHeaders['user-agent'], 'a\tb "c" é');
    assert.equal(r.requestHeaders['x-forwarded-for'], undefined, '"-" is absent');
    assert.equal(r.upstreamFailure, undefined, '"Success" is no failure');
    assert.equal(r.serverAddress, '10.0.0.1');
  });

  test('a TCP line: accept time, total duration, no HTTP fields', () => {
    const r = parseAccessLine(TCP_LINE);
    assert.equal(r.kind, 'connection');
    assert.equal(r.startMs, 1_795_486_671_007);
    assert.equal(r.durationMs, 1503);
    assert.equal(r.status, undefined);
    assert.equal(r.bytesSent, 10_000);
  });

  test('<NOSRV> and -1 timers are absent', () => {
    const r = parseAccessLine(NOSRV_LINE);
    assert.equal(r.server, undefined);
    assert.equal(r.serverAddress, undefined);
    assert.equal(r.serverResponseMs, undefined);
    assert.equal(r.responseStartMs, undefined);
  });

  for (const [name, line] of [
    ['truncated (longer than the log line limit)', HTTP_LINE.slice(0, 200)],
    ['not an object', 'HCAL1 ["a"]'],
    ['no frontend', 'HCAL1 {"ts":"1"}'],
    ['no marker', '{"f":"x"}'],
  ] as const) {
    test(`rejects a line that is ${name}`, () => assert.throws(() => parseAccessLine(line), AccessLineError));
  }

  test('fields of the wrong shape are absent, not errors', () => {
    const r = parseAccessLine('HCAL1 {"f":"x","ts":"soon","cp":"-5","tt":"1e3","q":"nope","sc":"200"}');
    assert.equal(r.startMs, undefined);
    assert.equal(r.clientPort, undefined);
    assert.equal(r.durationMs, undefined);
    assert.deepEqual(r.requestHeaders, {});
  });
});

describe('parseListenerLine', () => {
  test('HAProxy 2.6 connection error lines', () => {
    const r = parseListenerLine('127.0.0.1:60834 [24/Nov/2026:02:18:12.256] public_listener/1: SSL handshake failure');
    assert.ok(r);
    assert.equal(r.kind, 'listener');
    assert.equal(r.frontend, 'public_listener');
    assert.equal(r.clientPort, 60834);
    assert.equal(r.listenerMessage, 'SSL handshake failure');
    assert.equal(r.startMs, new Date(2026, 10, 24, 2, 18, 12, 256).getTime());
    assert.equal(parseListenerLine('::1:443 [01/Jan/2026:00:00:00.000] fe/1: Connection closed during SSL handshake')?.clientAddress, '::1');
  });

  test('anything else is not a listener line', () => {
    for (const text of ['Server be/s1 is DOWN', 'x:1 [24/Foo/2026:02:18:12.256] fe/1: y', 'nothost:1 [24/Nov/2026:02:18:12.256] fe/1: y']) {
      assert.equal(parseListenerLine(text), undefined, text);
    }
  });
});

describe('templates', () => {
  test('text formats split into literals and operators (args, max length)', () => {
    assert.deepEqual(parseTextFormat('[%START_TIME(%s.%3f)%] 100% %REQ(X-A?Y):8% end'), [
      '[',
      { name: 'START_TIME', args: '%s.%3f', maxLength: undefined },
      '] 100% ',
      { name: 'REQ', args: 'X-A?Y', maxLength: 8 },
      ' end',
    ]);
  });

  test('JSONFormat must be a JSON object; nesting and constants are kept', () => {
    assert.throws(() => parseJsonFormat('{"a": '), AccessLogTemplateError);
    assert.throws(() => parseJsonFormat('["%START_TIME%"]'), AccessLogTemplateError);
    const format = parseJsonFormat('{"a":{"b":"%BYTES_SENT%"},"n":1}');
    assert.equal(formatAccessRecord(format, record(), HOST), '{"a":{"b":245},"n":1}');
  });

  test('headers to capture come from the template; Envoy-internal ones are not captured', () => {
    assert.deepEqual(templateHeaders(defaultAccessLogFormat()), {
      request: [':authority', ':method', ':path', 'user-agent', 'x-forwarded-for', 'x-request-id'],
      response: [],
    });
    assert.deepEqual(templateHeaders(parseJsonFormat('{"a":"%REQ(X-B3?:scheme)% %RESP(Content-Type)% %REQ(bad header)%"}')), {
      request: ['x-b3'],
      response: ['content-type'],
    });
  });

  test('unsupported operators are listed (they render as null or -)', () => {
    assert.deepEqual(unsupportedOperators(defaultAccessLogFormat()), ['ROUTE_NAME']);
    assert.deepEqual(unsupportedOperators(parseJsonFormat('{"a":"%DYNAMIC_METADATA(x)%","b":"%REQ(:SCHEME)%"}')), ['DYNAMIC_METADATA', 'REQ(:scheme)']);
  });

  test(`at most ${MAX_TEMPLATE_HEADERS} headers`, () => {
    const many: AccessLogFormat = { kind: 'text', parts: parseTextFormat(Array.from({ length: MAX_TEMPLATE_HEADERS + 1 }, (_, i) => `%REQ(H${i})%`).join(' ')) };
    assert.throws(() => checkTemplateHeaders(many), /reads 17 distinct headers/);
  });
});

describe('formatAccessRecord', () => {
  test("Consul's default JSON: keys in order, typed values, null where HAProxy has no value", () => {
    const line = JSON.parse(formatAccessRecord(defaultAccessLogFormat(), parseAccessLine(HTTP_LINE), HOST)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(line), [
      'start_time',
      'route_name',
      'method',
      'path',
      'protocol',
      'response_code',
      'response_flags',
      'response_code_details',
      'connection_termination_details',
      'bytes_received',
      'bytes_sent',
      'duration',
      'upstream_service_time',
      'x_forwarded_for',
      'user_agent',
      'request_id',
      'authority',
      'upstream_host',
      'upstream_cluster',
      'upstream_local_address',
      'downstream_local_address',
      'downstream_remote_address',
      'requested_server_name',
      'upstream_transport_failure_reason',
    ]);
    assert.deepEqual(line, {
      start_time: new Date(1_795_486_671_062).toISOString(),
      route_name: null,
      method: 'GET',
      path: '/x?y="1"',
      protocol: 'HTTP/1.1',
      response_code: 200,
      response_flags: '-',
      response_code_details: 'via_upstream',
      connection_termination_details: null,
      bytes_received: 120,
      bytes_sent: 245,
      duration: 8,
      upstream_service_time: '4',
      x_forwarded_for: null,
      user_agent: 'a\tb "c" é',
      request_id: 'req-1',
      authority: 'api',
      upstream_host: '10.0.0.1:21000',
      upstream_cluster: 'api.default.dc1.internal.example.consul',
      upstream_local_address: '10.0.0.9:40222',
      downstream_local_address: '127.0.0.1:9191',
      downstream_remote_address: '127.0.0.1:50112',
      requested_server_name: null,
      upstream_transport_failure_reason: null,
    });
  });

  test('TCP with the default JSON: response_code 0, protocol "-", IPv6 in brackets', () => {
    const line = JSON.parse(formatAccessRecord(defaultAccessLogFormat(), parseAccessLine(TCP_LINE), HOST)) as Record<string, unknown>;
    assert.equal(line['response_code'], 0);
    assert.equal(line['protocol'], '-');
    assert.equal(line['method'], null);
    assert.equal(line['downstream_remote_address'], '[::1]:40000');
    assert.equal(line['duration'], 1503);
  });

  test('text formats: "-" for missing values, control characters escaped, one trailing newline removed', () => {
    const format: AccessLogFormat = { kind: 'text', parts: parseTextFormat('%REQ(:METHOD)% %REQ(X-FORWARDED-FOR)% "%REQ(USER-AGENT)%" %RESPONSE_CODE% %HOSTNAME%\n') };
    assert.equal(formatAccessRecord(format, record(), HOST), 'GET - "a\\tb "c" é" 200 host-1');
  });

  test('START_TIME with a format, max lengths, header fallbacks', () => {
    assert.equal(formatStartTime(Date.UTC(2026, 0, 2, 3, 4, 5, 67), '%Y-%m-%dT%H:%M:%S.%3f%z %s.%6f %F %T %%'), '2026-01-02T03:04:05.067+0000 1767323045.067000 2026-01-02 03:04:05 %');
    const r = record();
    assert.equal(operatorValue({ name: 'REQ', args: 'X-MISSING?USER-AGENT', maxLength: undefined }, r, HOST), 'a\tb "c" é');
    assert.equal(formatAccessRecord({ kind: 'text', parts: parseTextFormat('%REQ(X-MISSING?USER-AGENT):3%') }, r, HOST), 'a\\tb');
    assert.equal(operatorValue({ name: 'REQ', args: 'X-ENVOY-ORIGINAL-PATH?:PATH', maxLength: undefined }, r, HOST), '/x?y="1"');
    assert.equal(operatorValue({ name: 'UPSTREAM_REQUEST_ATTEMPT_COUNT', args: undefined, maxLength: undefined }, r, HOST), 1);
  });

  test('response flags from HAProxy termination states', () => {
    const cases: Array<[string, string | undefined, string]> = [
      ['----', 's', '-'],
      ['CD', 's', 'DC'],
      ['SC', undefined, 'UH'],
      ['SC+retried', undefined, 'UF'],
      ['SC', 's', 'UF'],
      ['sC', 's', 'UF'],
      ['sH', 's', 'UT'],
      ['SH', 's', 'UC'],
      ['SD', 's', 'UC'],
      ['cR', undefined, 'SI'],
      ['PR', undefined, '-'],
    ];
    for (const [state, server, flags] of cases) {
      const retried = state.endsWith('+retried');
      assert.equal(responseFlags(record({ terminationState: state.slice(0, 2), server, retries: retried ? 3 : 0 })), flags, state);
    }
    assert.equal(parseAccessLine('HCAL1 {"f":"x","rc":"+3"}').retries, 3, "a redispatch's + is dropped");
  });

  test("listener lines: termination details carry HAProxy's message", () => {
    const r = parseListenerLine('127.0.0.1:60834 [24/Nov/2026:02:18:12.256] public_listener/1: SSL handshake failure');
    assert.ok(r);
    const line = JSON.parse(formatAccessRecord(defaultAccessLogFormat(), r, HOST)) as Record<string, unknown>;
    assert.equal(line['connection_termination_details'], 'SSL handshake failure');
    assert.equal(line['downstream_remote_address'], '127.0.0.1:60834');
    assert.equal(line['response_code'], 0);
  });

  test('NOSRV: no upstream host, UH, attempt count 0, HTTP/2 named as Envoy does', () => {
    const r = parseAccessLine(NOSRV_LINE);
    const line = JSON.parse(
      formatAccessRecord(parseJsonFormat('{"h":"%UPSTREAM_HOST%","f":"%RESPONSE_FLAGS%","a":"%UPSTREAM_REQUEST_ATTEMPT_COUNT%","p":"%PROTOCOL%","d":"%CONNECTION_TERMINATION_DETAILS%"}'), r, HOST),
    ) as Record<string, unknown>;
    assert.deepEqual(line, { h: null, f: 'UH', a: 0, p: 'HTTP/2', d: 'SC' });
  });
});
