"""The published GTZAN splits (Kereliuk et al. 2015), encoded compactly: one string per genre
whose character i gives the split of `<genre>.000ii`: "t" train, "v" validation, "e" test,
"." left out. Tests check this encoding against the published file lists."""

SPLIT_CODES = {"t": "train", "v": "validation", "e": "test"}

# Fault-filtered (Sturm's repetitions, mislabelings and distortions removed): 443 / 197 / 290.
FAULT_FILTERED = {
    "blues": "vvvvvvvvvvvveeeeeeeeeeeeeeeeetttttttttttttttttttttvvvvvvvvvvveeeeeeeeeeeetttttttttttttttttttttttttee",
    "classical": "vvvvvvvvvvveeeeeeeeeeeeeeeeeeetttteeeeeeee.ttttttettttttttttttttttttvvvvvvvvveeetttttttttttttttttttt",
    "country": "vvvvvvvv.vvvvvvvvvvttttttttvtteeeeeeeeeeevveeveeevee.eeeeeeeeeeeettttttttttttttttttttttttttttttttttt",
    "disco": "vevvvtvvvvvvvvvttttttetttttttttttttttt.tttttttvtvt..vtt.ttet.teeeeevvet.vttveeeeeeeeeeeeetveeeevee.e",
    "hiphop": "e.tttttttttttttttttttttttteettetttttttt.etteee.....eeeettttttteeeeeeeeeeeeee.ttttvvvvvvvvvvvvvvvvvve",
    "jazz": "ttvvvvvvvvvttttttttttttttvvvvvvvv........t.....tttttttttttttttttttttttttteeeeeeeeeeeeeeeeeeeeeeeeeee",
    "metal": "vvtt.tvvvvvveeeevvvvvteeteeeeeeeee.tvvee......tttttttttttt.ttttttttevtetteeevvettvveteteettttttttttt",
    "pop": "eettttttttvttee.ttttt..ttttttt.tttttt.tttttet.t..tt..v.v..vvvvveeee..eeeeeeeeeeetvevvvv.eeeeeeeeettt",
    "reggae": "ttt.t.t..t.tt.ttttttttttttttttttt.eeeeeee.tttteeettteetttttttvvteeeeetvev.v.vvve..eeev.eeee.vvvvvvvv",
    "rock": "tttttttttteeeeeettttttttttteeeeeeeeeeeveeeeeeeeeevvvvvvvvttttttttttttttvvvvvvvvvvvvvvveeeeettttttttt",
}

# Stratified by genre over all 1000 files: 500 / 250 / 250.
STRATIFIED = {
    "blues": "ttttvetvvveteetevtttetveeettettevttvttttetvetvtttetveevtttvetvetetvtvttvtvtttevtvtveetvtttvtevtevtet",
    "classical": "tttttvvvvevttvtvetvetevtettvtevttveeeetvteeetevttttteeveettttetvttetvetvttvetvttttttttveevvtetvtttvt",
    "country": "vvetvvtttvtetttvttttveeeevvvttvetetttttttevvttvetteeeetvtevtvttteetttttvetteeeetttevvttvvtvevtttttve",
    "disco": "eeeveettetttetevtttttevttvttvvttvettttevvttvttvttevvtvtettevtevtttttetvevvvteeteetettvevttttvvevttet",
    "hiphop": "tetvevtveevttteevetvttteeetteettttetvvtvttevtttvvttvtttvttttteettevvtvevtttevtttvvvvtetetttetveeevtt",
    "jazz": "vvtettttvetvttttevevevvttvtttvtetetevetettvtvevvevtvtettvttttttvtveetetetettetettvvveeteettttttttvve",
    "metal": "teettetvvvttvttvtteteetttttttvevvvvetttvetevvteteteetvevteetttevvtevvetttvttttetettvettvttttetvvvtet",
    "pop": "evttteevetvtttvtvtvvtetvtvttvveetteteveeetttetevtettettttvvvvttttteteeettvttttvtvtttevttevvettvteetv",
    "reggae": "vveettevvttttttetttveeetvvvttvttvevettvvtttttvevetetttttteettvtvtttveevtvtettteevetetvvtttvttveteete",
    "rock": "eeettttvteeevvttvtvvevvtttttvvveeettvtvettevttvetveetvttvettevttetttvteteeetvttettettttvtvttvtttvtet",
}
