import tseslint from 'typescript-eslint'
import layering from './eslint.layering.js'

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', '.tap/**', 'bench/out/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    files: ['proto/**/*.ts', 'gateway/**/*.ts', 'control/**/*.ts', 'agent/**/*.ts'],
    plugins: { layering },
    rules: { 'layering/imports': 'error' },
  },
)
