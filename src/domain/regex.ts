/**
 * Regexes from Consul (service-router `PathRegex`, header and query `Regex`) are RE2, the engine
 * Envoy runs; HAProxy 2.6.12 runs them with PCRE2 10.42, 8-bit, non-UTF, JIT. PURE.
 *
 * re2Problem accepts a pattern only when RE2 (re2js, a port of Go's RE2 parser) compiles it, alone
 * and anchored, into at most MAX_PROGRAM_SIZE instructions, and none of these cheap-to-detect
 * cases is in it (each measured with `haproxy -c` or read at the source), where PCRE2 would refuse
 * the pattern (so `haproxy -c` fails) or read it differently:
 * - a character outside ASCII, or an escape `\x..` / `\x{..}` above 0x7f: RE2 reads code points,
 *   PCRE2 bytes (`é+`, `[é]` and `\x{e9}` differ); above 0xff PCRE2 refuses the pattern;
 * - `\v`: RE2's vertical tab, PCRE2's class of vertical white space (LF, CR, FF, 0x85 too);
 * - `\1` to `\9` followed by digits: octal in RE2, a back-reference in PCRE2 once as many groups
 *   precede it (`\1` alone RE2 refuses);
 * - `\p`/`\P` with anything but a general category or `Any`: script tables differ between the two
 *   Unicode versions (`\p{Kawi}` makes `haproxy -c` fail);
 * - `[.` or `[=` inside a class: RE2 reads literal characters, PCRE2 refuses POSIX collating
 *   elements (`[[.a.]]`);
 * - `(?<name>`: Go (and so re2js) accepts it, but RE2 only does since mid-2023, after the Envoy
 *   releases Consul 1.16 supports (1.23-1.26);
 * - a `(?P<name>` whose name starts with a digit or is longer than 32 characters: PCRE2 refuses it;
 * - `{,n}`: literal text in RE2 and PCRE2 10.42, a repetition from PCRE2 10.43 on.
 *
 * Known, not refused (documented approximations): on non-ASCII input (header values can carry
 * obs-text) `.`, negated classes, `\pL` and `(?i)` work on UTF-8 code points in RE2 but on bytes
 * in PCRE2; PCRE2 backtracks and gives up at its match limit where RE2 would answer; Envoy refuses
 * a pattern whose RE2 program is above 100 instructions (runtime
 * `re2.max_program_size.error_level`), which only C++ RE2 can count (re2js counts differently:
 * only above 1000 is refused here). `$` ends the text in RE2 but also matches before a final
 * newline in PCRE2: paths and header values never hold a newline, and anchoredRegex ends with `\z`.
 *
 * mayMatchComma tells whether a pattern can match a ',', for header matching (values joined with ',').
 */
import { re2 } from './re2.js';

/**
 * The largest RE2 program (re2js instructions) accepted. Envoy refuses programs above 100 C++ RE2
 * instructions by default, a count re2js cannot reproduce; HAProxy's PCRE2 (LINK_SIZE 2: 64 KiB of
 * compiled code) fails `haproxy -c` from about 2000 (measured: `[ab]` repeated 1986 times).
 */
const MAX_PROGRAM_SIZE = 1000;
/** PCRE2's longest group name (MAX_NAME_SIZE in 10.42). */
const MAX_PCRE2_GROUP_NAME = 32;

/** The Unicode classes both engines know by the same name. */
const SHARED_UNICODE_CLASSES = new Set([...'C Cc Cf Cn Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs Any'.split(' ')]);

/** `pattern` as a full match for HAProxy's `-m reg` (a search): `\z`, since PCRE2's `$` also matches before a final LF. */
export function anchoredRegex(pattern: string): string {
  return `^(?:${pattern})\\z`;
}

/**
 * Why the pattern cannot be used as Envoy would use it: RE2 refuses it, or HAProxy's PCRE2 would
 * refuse it or read it differently (see the module comment); undefined when it can be used.
 */
export function re2Problem(pattern: string): string | undefined {
  for (const [candidate, what] of [
    [pattern, 'RE2 refuses it'],
    [anchoredRegex(pattern), 'RE2 refuses it once anchored (it must be a complete expression)'],
  ] as const) {
    try {
      const size = re2().compile(candidate).programSize();
      if (size > MAX_PROGRAM_SIZE) return `its RE2 program has ${size} instructions, above ${MAX_PROGRAM_SIZE} (Envoy's default limit is 100, and HAProxy's PCRE2 cannot compile the largest ones)`;
    } catch (err) {
      return `${what}: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  return pcre2Divergence(pattern);
}

/** The first construct RE2 and PCRE2 read differently (or PCRE2 refuses), scanning `pattern` once. */
function pcre2Divergence(pattern: string): string | undefined {
  let inClass = false;
  let classStart = 0;
  let i = 0;
  while (i < pattern.length) {
    const char = pattern.charAt(i);
    if (char.charCodeAt(0) > 0x7f) return `it holds the non-ASCII character ${JSON.stringify(char)}, which RE2 reads as a code point and HAProxy's PCRE2 as bytes`;
    if (char === '\\') {
      const afterEscape = escapeProblem(pattern, i);
      if (typeof afterEscape === 'string') return afterEscape;
      i = afterEscape;
      continue;
    }
    if (inClass) {
      if (char === '[' && (pattern[i + 1] === '.' || pattern[i + 1] === '=')) return `it holds ${JSON.stringify(pattern.slice(i, i + 2))} inside a class, a POSIX collating element PCRE2 refuses`;
      if (char === '[' && pattern[i + 1] === ':') {
        const end = pattern.indexOf(':]', i + 2);
        i = end < 0 ? i + 1 : end + 2;
        continue;
      }
      if (char === ']' && i > classStart) inClass = false;
      i++;
      continue;
    }
    if (char === '[') {
      inClass = true;
      i++;
      if (pattern[i] === '^') i++;
      // A `]` right after the opening bracket is a member, not the end.
      classStart = i + 1;
      continue;
    }
    if (pattern.startsWith('(?<', i)) return 'it uses the (?<name>...) group syntax, which the RE2 of Envoy 1.23-1.26 refuses (write (?P<name>...))';
    const name = pattern.startsWith('(?P<', i) ? /^\(\?P<([^>]*)>/.exec(pattern.slice(i))?.[1] : undefined;
    if (name !== undefined && (name.length > MAX_PCRE2_GROUP_NAME || /^[0-9]/.test(name))) {
      return `its group name in ${JSON.stringify(pattern.slice(i, i + 40))} starts with a digit or is longer than ${MAX_PCRE2_GROUP_NAME} characters, which PCRE2 refuses`;
    }
    if (/^\{,[0-9]*\}/.test(pattern.slice(i))) return 'it holds "{,n}", literal text in RE2 but a repetition in PCRE2 from 10.43 on';
    i++;
  }
  return undefined;
}

/** The problem with the escape at `pattern[at]` (a backslash), or the index just after it. */
function escapeProblem(pattern: string, at: number): string | number {
  const letter = pattern.charAt(at + 1);
  if (letter === 'Q') {
    const end = pattern.indexOf('\\E', at + 2);
    const quoted = end < 0 ? pattern.slice(at + 2) : pattern.slice(at + 2, end);
    const wide = /[^\x00-\x7f]/.exec(quoted);
    if (wide !== null) return `it holds the non-ASCII character ${JSON.stringify(wide[0])}, which RE2 reads as a code point and HAProxy's PCRE2 as bytes`;
    return end < 0 ? pattern.length : end + 2;
  }
  if (letter === 'v') return 'it uses \\v, a vertical tab in RE2 but any vertical white space in PCRE2';
  if (/[1-9]/.test(letter)) return `it uses ${JSON.stringify(pattern.slice(at, at + 4))}, an octal escape in RE2 that PCRE2 may read as a back-reference`;
  if (letter === 'x') {
    const braced = /^\{([0-9A-Fa-f]*)\}/.exec(pattern.slice(at + 2));
    const hex = braced !== null ? (braced[1] ?? '') : pattern.slice(at + 2, at + 4);
    if (Number.parseInt(hex, 16) > 0x7f) return `it uses ${JSON.stringify(pattern.slice(at, at + 4 + hex.length))}, a code point in RE2 but a byte in PCRE2 (or refused above 0xff)`;
    return at + 2 + (braced !== null ? braced[0].length : hex.length);
  }
  if (letter === 'p' || letter === 'P') {
    const braced = /^\{\^?([^}]*)\}/.exec(pattern.slice(at + 2));
    const name = braced !== null ? (braced[1] ?? '') : pattern.charAt(at + 2);
    if (!SHARED_UNICODE_CLASSES.has(name)) return `it uses the Unicode class ${JSON.stringify(name)}; only general categories and Any have the same meaning in RE2 and PCRE2 10.42`;
    return at + 2 + (braced !== null ? braced[0].length : 1);
  }
  if (letter.charCodeAt(0) > 0x7f) return `it holds the non-ASCII character ${JSON.stringify(letter)}, which RE2 reads as a code point and HAProxy's PCRE2 as bytes`;
  return at + 2;
}

/** What re2js compiles a pattern into, as far as mayMatchComma reads it (internal, checked at run time). */
interface ProgInstruction {
  op: number;
  runes: ArrayLike<number>;
}

/** re2js's Inst.RUNE, RUNE1, RUNE_ANY, RUNE_ANY_NOT_NL: the instructions that consume a character. */
const RUNE = 8;
const RUNE1 = 9;
const RUNE_ANY = 10;
const RUNE_ANY_NOT_NL = 11;
const COMMA = 0x2c;

function instructionsOf(pattern: string): readonly ProgInstruction[] | undefined {
  const prog: unknown = re2().compile(pattern).re2().prog;
  if (typeof prog !== 'object' || prog === null || !('inst' in prog) || !Array.isArray(prog.inst)) return undefined;
  const instructions: unknown[] = prog.inst;
  const valid = instructions.every((inst) => typeof inst === 'object' && inst !== null && 'op' in inst && typeof inst.op === 'number' && 'runes' in inst && typeof inst.runes === 'object');
  return valid ? (instructions as ProgInstruction[]) : undefined;
}

/**
 * Whether some string the (RE2-valid) pattern matches may contain a ',': true when any instruction
 * of its compiled program consumes a ','. Conservative: true when the program cannot be read (the
 * re2js internals it reads are not public API). Header matching uses it: Envoy matches the values
 * of a repeated header joined with ',', which a pattern that never matches ',' cannot match.
 */
export function mayMatchComma(pattern: string): boolean {
  const instructions = instructionsOf(pattern);
  if (instructions === undefined) return true;
  return instructions.some((inst) => {
    if (inst.op === RUNE_ANY || inst.op === RUNE_ANY_NOT_NL) return true;
    if (inst.op === RUNE1) return inst.runes[0] === COMMA;
    if (inst.op !== RUNE) return false;
    if (inst.runes.length % 2 !== 0) return true;
    for (let k = 0; k < inst.runes.length; k += 2) {
      if ((inst.runes[k] ?? 0) <= COMMA && COMMA <= (inst.runes[k + 1] ?? 0)) return true;
    }
    return false;
  });
}
