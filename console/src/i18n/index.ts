// Japanese and English. Japanese when the browser prefers it (or the user
// chose it: remembered in localStorage); every key exists in both (the
// compiler checks `ja` against `en`), and a key missing at run time is
// recorded on `window.__mamoriMissingKeys`, which the browser tests read.

import i18n from 'i18next';
import { initReactI18next } from 'react-i18next';
import { en } from './en';
import { ja } from './ja';

export const LANGUAGES = ['ja', 'en'] as const;
export type Language = (typeof LANGUAGES)[number];

declare global {
  interface Window {
    __mamoriMissingKeys?: string[];
  }
}

function preferred(): Language {
  const saved = localStorage.getItem('mamori.lang');
  if (saved === 'ja' || saved === 'en') return saved;
  const wanted = navigator.languages?.length ? navigator.languages : [navigator.language];
  for (const l of wanted) {
    if (l.toLowerCase().startsWith('ja')) return 'ja';
    if (l.toLowerCase().startsWith('en')) return 'en';
  }
  return 'en';
}

export function setLanguage(l: Language): void {
  localStorage.setItem('mamori.lang', l);
  void i18n.changeLanguage(l);
  document.documentElement.lang = l;
}

window.__mamoriMissingKeys = [];
void i18n.use(initReactI18next).init({
  resources: { en: { translation: en }, ja: { translation: ja } },
  lng: preferred(),
  fallbackLng: false,
  interpolation: { escapeValue: false },
  saveMissing: true,
  missingKeyHandler: (_lngs, _ns, key) => {
    window.__mamoriMissingKeys?.push(key);
  },
});
document.documentElement.lang = i18n.language;

export default i18n;
