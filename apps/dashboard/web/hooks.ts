import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api";

export interface Resource<T> {
  data?: T;
  error?: Error;
  loading: boolean;
  reload(): Promise<void>;
}

/**
 * The answer of a GET, loaded when `path` changes and again every `refreshMs` when given (the
 * pages' live counters and lists); null `path`: nothing to load yet. A refresh keeps showing the
 * previous data until the new answer arrives, so a live page does not flicker.
 */
export function useResource<T>(path: string | null, refreshMs?: number): Resource<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({
    loading: path !== null,
  });
  const current = useRef(path);
  current.current = path;

  const load = useCallback(async () => {
    if (path === null) return;
    setState((previous) => ({ ...previous, loading: true }));
    try {
      const data = await api<T>(path);
      if (current.current === path) setState({ data, loading: false });
    } catch (error) {
      if (current.current === path)
        setState((previous) => ({ ...previous, error: error as Error, loading: false }));
    }
  }, [path]);

  useEffect(() => {
    setState({ loading: path !== null });
    void load();
    if (!refreshMs) return;
    const timer = setInterval(() => void load(), refreshMs);
    return () => clearInterval(timer);
  }, [load, refreshMs, path]);

  return { ...state, reload: load };
}

/** Sets the document's title (what a screen reader announces and a tab shows). */
export function useTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · Postern`;
  }, [title]);
}
