import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The page is served by the Python server at /__workbench; its files ship inside the package.
export default defineConfig({
  base: "/__workbench/",
  plugins: [react()],
  build: {
    outDir: "../src/stepline/_workbench_static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: { proxy: { "/__workbench/api": "http://127.0.0.1:3000" } },
});
