import { defineConfig } from 'vite';

// React's JSX through esbuild (no plugin needed); the gateway serves the
// build from `dist/`, hashed assets under `assets/`.
export default defineConfig({
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    sourcemap: false,
    // The chart's chunk (ECharts) is loaded only after the dashboard has
    // drawn; the first route's JavaScript is far below this.
    chunkSizeWarningLimit: 600,
    rollupOptions: {
      // Mantine marks its modules "use client" (for React Server
      // Components); a plain SPA bundle ignores that, and says so per file.
      onwarn(warning, warn) {
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        warn(warning);
      },
      output: {
        manualChunks: {
          react: ['react', 'react-dom', 'react-router'],
          mantine: ['@mantine/core', '@mantine/hooks'],
          query: ['@tanstack/react-query'],
          i18n: ['i18next', 'react-i18next'],
        },
      },
    },
  },
  server: {
    // `npm run dev` next to a running gateway.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/.well-known': 'http://127.0.0.1:8080',
    },
  },
});
