/** The structured logger: the JSON line's shape (pino's), levels, redaction, errors, and hostile values. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { createLogger, formatTextLine, type LogLevel, silentLogger } from '../../src/logger.js';

function capture(level: LogLevel = 'debug', format: 'json' | 'text' = 'json') {
  const out: string[] = [];
  const logger = createLogger(level, { write: (s: string) => out.push(s) }, format);
  return { logger, out, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('logger', () => {
  test('one JSON line per entry: level, time, app, bindings, fields, msg, in that order', () => {
    const { logger, out } = capture();
    logger.child({ component: 'consul' }).info({ watch: 'leaf', index: 7 }, 'watch started');
    assert.equal(out.length, 1);
    assert.match(out[0] as string, /^\{"level":"info","time":"\d{4}-\d\d-\d\dT[\d:.]+Z","app":"haproxy-connect","component":"consul","watch":"leaf","index":7,"msg":"watch started"\}\n$/);
  });

  test('a message alone, and fields alone', () => {
    const { logger, lines } = capture();
    logger.warn('just text');
    logger.error({ code: 'X' });
    assert.deepEqual(
      lines().map(({ time, ...rest }) => rest),
      [
        { level: 'warn', app: 'haproxy-connect', msg: 'just text' },
        { level: 'error', app: 'haproxy-connect', code: 'X' },
      ],
    );
  });

  test('levels below the threshold are not written; isLevelEnabled agrees', () => {
    const { logger, lines } = capture('warn');
    logger.trace('t');
    logger.debug('d');
    logger.info('i');
    logger.warn('w');
    logger.error('e');
    logger.fatal('f');
    assert.deepEqual(
      lines().map((l) => l.level),
      ['warn', 'error', 'fatal'],
    );
    assert.equal(logger.isLevelEnabled('info'), false);
    assert.equal(logger.isLevelEnabled('warn'), true);
    assert.equal(logger.child({ component: 'x' }).isLevelEnabled('debug'), false);
    const silent = silentLogger();
    assert.equal(silent.isLevelEnabled('fatal'), false);
    silent.fatal('nothing');
  });

  test('secret-bearing keys are redacted at the top and one object down, in both formats', () => {
    const { logger, lines } = capture();
    logger.info({ token: 's1', leaf: { privateKeyPem: 's2', serial: '01' }, headers: { 'x-consul-token': 's3', accept: 'json' } }, 'm');
    const line = lines()[0] as Record<string, unknown>;
    assert.equal(line.token, '[redacted]');
    assert.deepEqual(line.leaf, { privateKeyPem: '[redacted]', serial: '01' });
    assert.deepEqual(line.headers, { 'x-consul-token': '[redacted]', accept: 'json' });
    const text = capture('info', 'text');
    text.logger.child({ token: 'bound-secret' }).info({ x: 1 }, 'm');
    assert.doesNotMatch(text.out.join(''), /bound-secret/);
  });

  test('an Error under err is written with its type, message and stack', () => {
    const { logger, lines } = capture();
    logger.error({ err: new TypeError('boom') }, 'failed');
    const err = lines()[0]?.err as Record<string, unknown>;
    assert.equal(err.type, 'TypeError');
    assert.equal(err.message, 'boom');
    assert.match(String(err.stack), /TypeError: boom/);
  });

  test('values JSON cannot write still give one line', () => {
    const { logger, lines } = capture();
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    logger.info({ big: 10n, cycle }, 'odd values');
    const line = lines()[0] as Record<string, unknown>;
    assert.equal(line.big, '10');
    assert.equal(line.msg, 'odd values');
  });

  test('a field named __proto__ is written as a field in both formats, and sets no prototype', () => {
    const fields = JSON.parse('{"__proto__": "x", "d": 1}') as Record<string, unknown>;
    const json = capture();
    json.logger.warn({ ...fields, when: new Date(0) }, 'm');
    const line = JSON.parse(json.out[0] as string) as Record<string, unknown>;
    assert.ok(Object.hasOwn(line, '__proto__'));
    assert.equal(line['when'], '1970-01-01T00:00:00.000Z');
    const text = capture('info', 'text');
    text.logger.warn({ ...fields, when: new Date(0) }, 'm');
    assert.match(text.out[0] as string, / __proto__=x d=1 when=1970-01-01T00:00:00.000Z\n$/);
  });
  test('property: the text line is the JSON line formatted (formatTextLine), whatever the values', () => {
    const withoutTime = (line: string): string => line.replace(/^\S+ /, '');
    const value = fc.oneof(
      fc.string({ unit: 'binary' }),
      fc.double(),
      fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0),
      fc.boolean(),
      fc.constant(null),
      fc.jsonValue(),
      fc.date({ noInvalidDate: true }),
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.dictionary(fc.string({ unit: 'binary' }), value), (msg, fields) => {
        const json = capture();
        json.logger.warn(fields, msg);
        const text = capture('info', 'text');
        text.logger.warn(fields, msg);
        assert.equal(withoutTime(text.out[0] as string), `${withoutTime(formatTextLine(json.out[0] as string))}\n`);
      }),
      { numRuns: 300 },
    );
  });

  test('property: any message and field values stay one parseable line with those values (JSON), one line (text)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.dictionary(fc.string({ unit: 'binary' }), fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.boolean())), (msg, fields) => {
        const json = capture();
        json.logger.info(fields, msg);
        assert.equal(json.out.length, 1);
        assert.equal((json.out[0] as string).indexOf('\n'), (json.out[0] as string).length - 1);
        const line = json.lines()[0] as Record<string, unknown>;
        assert.equal(line.msg, msg);
        for (const [k, v] of Object.entries(fields)) {
          if (['level', 'time', 'app', 'msg', 'token', 'privateKeyPem', 'x-consul-token', 'err', '__proto__'].includes(k)) continue;
          assert.deepEqual(line[k], v, k);
        }
        const text = capture('info', 'text');
        text.logger.info(fields, msg);
        assert.equal((text.out[0] as string).split('\n').length, 2);
        assert.equal(formatTextLine(json.out[0] as string).includes('\n'), false);
      }),
      { numRuns: 300 },
    );
  });
});
