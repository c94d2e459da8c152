/// <reference types="vitest/config" />
// Vite + vitest configuration. The dev server proxies the control API (same origin in
// production: iron-control serves `dist/` at `/`), so cookies and EventSource behave alike.
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const control = process.env.IRON_CONTROL_URL ?? 'http://127.0.0.1:7070'

export default defineConfig({
  base: '/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      '/v1': { target: control, changeOrigin: false },
      '/openapi.json': { target: control },
    },
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/**/*.test.ts'],
    restoreMocks: true,
  },
})
