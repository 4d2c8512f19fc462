// One labelled value of a page's facts (a device's OS, its agent, …).

import { Stack, Text } from '@mantine/core';

export function Fact({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <Stack gap={0}>
      <Text size="xs" c="dimmed">
        {label}
      </Text>
      {/* A div, so a value may be more than a line of text (a badge and its detail). */}
      <Text size="sm" component="div">
        {children}
      </Text>
    </Stack>
  );
}
