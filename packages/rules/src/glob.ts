/**
 * Address patterns of project rules: `*` stands for any run of characters (none included), every
 * other character for itself, compared without regard to case (`*@example.com`,
 * `*@*.example.net`, `billing+*@example.org`). No user-supplied regular expression ever runs.
 *
 * A pattern is split once at its stars into literal pieces; matching anchors the first piece at the
 * start and the last at the end, and finds each piece between at its leftmost place after the one
 * before (leftmost is always right for `*`-only globs: a later place leaves less room, never more).
 * Each piece is looked for once with `indexOf`, so a match costs at most the length of the address
 * times the length of the pattern, whatever the pattern: no backtracking, unlike the regular
 * expression `^.*a.*a.*a.*b$` a naive translation of `*a*a*a*b` gives.
 */
export interface Glob {
  /** The pattern as written. */
  readonly source: string;
  matches(text: string): boolean;
}

export function compileGlob(pattern: string): Glob {
  const pieces = pattern.toLowerCase().split("*");
  // No star: one piece, the whole text.
  if (pieces.length === 1) {
    const literal = pieces[0] as string;
    return { source: pattern, matches: (text) => text.toLowerCase() === literal };
  }
  const first = pieces[0] as string;
  const last = pieces[pieces.length - 1] as string;
  const middle = pieces.slice(1, -1).filter((piece) => piece.length > 0);
  const fixed = first.length + last.length;
  return {
    source: pattern,
    matches(input) {
      const text = input.toLowerCase();
      if (text.length < fixed || !text.startsWith(first) || !text.endsWith(last)) return false;
      // The middle pieces must fit, in order, between the first piece and the last.
      const end = text.length - last.length;
      let at = first.length;
      for (const piece of middle) {
        const found = text.indexOf(piece, at);
        if (found < 0 || found + piece.length > end) return false;
        at = found + piece.length;
      }
      return true;
    },
  };
}
