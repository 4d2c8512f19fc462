// The tenant's offices and departments, for pickers and names.

import { useQuery } from '@tanstack/react-query';
import * as api from '../api/client';
import type { Schemas } from '../api/client';

export type GroupView = Schemas['GroupView'];

export function useGroups(enabled = true) {
  return useQuery({
    queryKey: ['groups'],
    enabled,
    queryFn: () => api.call<GroupView[]>('GET', '/api/v1/groups'),
  });
}

/** Each group's full path ("Tokyo / Sales"), in tree order. */
export function groupPaths(groups: GroupView[]): { id: string; path: string; depth: number }[] {
  const children = new Map<string | null, GroupView[]>();
  for (const g of groups) {
    const key = g.parent_id ?? null;
    children.set(key, [...(children.get(key) ?? []), g]);
  }
  const out: { id: string; path: string; depth: number }[] = [];
  const walk = (parent: string | null, prefix: string, depth: number) => {
    const kids = [...(children.get(parent) ?? [])].sort((a, b) => a.name.localeCompare(b.name));
    for (const g of kids) {
      const path = prefix ? `${prefix} / ${g.name}` : g.name;
      out.push({ id: g.id, path, depth });
      if (depth < 64) walk(g.id, path, depth + 1);
    }
  };
  walk(null, '', 0);
  return out;
}

/** Options for a group picker (value: id, label: full path). */
export function groupOptions(groups: GroupView[] | undefined): { value: string; label: string }[] {
  return groupPaths(groups ?? []).map((g) => ({ value: g.id, label: g.path }));
}
