package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// siteTemplates are fictional hospitals in the countries CAR-T is given in: the US, China and
// Europe, interleaved so that any number of sites mixes the three (12 sites: 4 each).
var siteTemplates = []Site{
	{Name: "Lakeshore Cancer Center", City: "Chicago", Country: "US"},
	{Name: "Xihu People's Hospital", City: "Hangzhou", Country: "CN"},
	{Name: "Universitätsklinikum Mainufer", City: "Frankfurt am Main", Country: "DE"},
	{Name: "Bayview University Hospital", City: "San Francisco", Country: "US"},
	{Name: "Pearl River Cancer Hospital", City: "Guangzhou", Country: "CN"},
	{Name: "Hôpital Saint-Lazare", City: "Lyon", Country: "FR"},
	{Name: "Riverside Medical Center", City: "Houston", Country: "US"},
	{Name: "Jinling University Hospital", City: "Nanjing", Country: "CN"},
	{Name: "Hospital Clínico del Turia", City: "Valencia", Country: "ES"},
	{Name: "Northgate Cancer Institute", City: "Boston", Country: "US"},
	{Name: "Yanjing Hematology Hospital", City: "Beijing", Country: "CN"},
	{Name: "Ospedale San Rocco", City: "Milan", Country: "IT"},
	{Name: "Pinecrest Health", City: "Seattle", Country: "US"},
	{Name: "Huangpu Medical Center", City: "Shanghai", Country: "CN"},
	{Name: "Amstel Medical Centre", City: "Amsterdam", Country: "NL"},
	{Name: "Magnolia University Hospital", City: "Atlanta", Country: "US"},
	{Name: "Jinjiang Hospital", City: "Chengdu", Country: "CN"},
	{Name: "Kings Cross Haematology Centre", City: "London", Country: "GB"},
	{Name: "Mesa Verde Cancer Center", City: "Phoenix", Country: "US"},
	{Name: "Wuhan Donghu Hospital", City: "Wuhan", Country: "CN"},
	{Name: "Klinikum Isartal", City: "Munich", Country: "DE"},
	{Name: "Great Plains Medical Center", City: "Omaha", Country: "US"},
	{Name: "Qilu Union Hospital", City: "Jinan", Country: "CN"},
	{Name: "Hospital Universitario Río Manzanares", City: "Madrid", Country: "ES"},
}

// makeSites returns n sites; beyond the templates, further campuses of the same hospitals.
func makeSites(n int) []Site {
	sites := make([]Site, n)
	for i := range sites {
		s := siteTemplates[i%len(siteTemplates)]
		if round := i / len(siteTemplates); round > 0 {
			s.Name = fmt.Sprintf("%s, campus %d", s.Name, round+1)
		}
		s.Identifier = fmt.Sprintf("site-%03d", i+1)
		sites[i] = s
	}
	return sites
}

// people are the family and given names of a country (given names by sex).
type people struct{ family, male, female []string }

var peopleOf = map[string]people{
	"US": {
		family: []string{"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
			"Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Lee", "Nguyen", "Kim", "Patel", "Hale", "Okafor"},
		male: []string{"James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Carlos", "Daniel", "Marcus",
			"Anthony", "Kevin", "Jose", "Andrew", "Ethan"},
		female: []string{"Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Maria",
			"Karen", "Lisa", "Nancy", "Ashley", "Emily", "Grace"},
	},
	"CN": {
		family: []string{"Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu",
			"Hu", "Guo", "He", "Lin", "Gao", "Luo"},
		male: []string{"Wei", "Hao", "Jun", "Lei", "Qiang", "Jian", "Tao", "Ming", "Bo", "Yong", "Jie", "Peng", "Chao", "Hui",
			"Zhiwei", "Haoran"},
		female: []string{"Fang", "Min", "Jing", "Li", "Yan", "Juan", "Xia", "Lanying", "Mei", "Ting", "Xiu", "Hong", "Yu", "Na",
			"Meiling", "Xiaoyan"},
	},
	"DE": {
		family: []string{"Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
			"Koch", "Richter", "Wolf", "Schröder", "Neumann", "Braun"},
		male:   []string{"Thomas", "Michael", "Andreas", "Stefan", "Klaus", "Jürgen", "Frank", "Uwe", "Lukas", "Jonas", "Matthias", "Wolfgang"},
		female: []string{"Sabine", "Petra", "Monika", "Ursula", "Andrea", "Claudia", "Anna", "Lea", "Julia", "Katrin", "Birgit", "Heike"},
	},
	"FR": {
		family: []string{"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
			"Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "Fournier"},
		male:   []string{"Jean", "Pierre", "Michel", "Philippe", "Alain", "Nicolas", "Louis", "Hugo", "François", "Antoine", "Julien", "Éric"},
		female: []string{"Marie", "Nathalie", "Isabelle", "Sylvie", "Catherine", "Camille", "Léa", "Chloé", "Sophie", "Céline", "Hélène", "Anne"},
	},
	"ES": {
		family: []string{"García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Martín",
			"Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno", "Álvarez"},
		male:   []string{"Antonio", "José", "Manuel", "Francisco", "David", "Juan", "Javier", "Daniel", "Carlos", "Miguel", "Pablo", "Sergio"},
		female: []string{"María", "Carmen", "Ana", "Isabel", "Laura", "Cristina", "Marta", "Lucía", "Pilar", "Elena", "Rosa", "Sara"},
	},
	"IT": {
		family: []string{"Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco",
			"Bruno", "Gallo", "Conti", "De Luca", "Costa", "Giordano"},
		male:   []string{"Giuseppe", "Giovanni", "Antonio", "Mario", "Luigi", "Francesco", "Marco", "Alessandro", "Andrea", "Paolo", "Stefano", "Luca"},
		female: []string{"Maria", "Anna", "Giuseppina", "Rosa", "Angela", "Giovanna", "Francesca", "Chiara", "Giulia", "Sara", "Paola", "Elena"},
	},
	"NL": {
		family: []string{"de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser", "Smit", "Meijer",
			"de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters"},
		male:   []string{"Jan", "Johannes", "Pieter", "Kees", "Willem", "Hendrik", "Daan", "Sem", "Lucas", "Bram", "Joost", "Maarten"},
		female: []string{"Maria", "Johanna", "Anna", "Cornelia", "Emma", "Sophie", "Julia", "Anouk", "Sanne", "Lotte", "Femke", "Ingrid"},
	},
	"GB": {
		family: []string{"Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
			"Thompson", "Evans", "Walker", "White", "Roberts", "Khan"},
		male:   []string{"Oliver", "George", "Harry", "Jack", "David", "Paul", "Mark", "Andrew", "Ian", "Peter", "Stephen", "Mohammed"},
		female: []string{"Olivia", "Amelia", "Emily", "Susan", "Margaret", "Helen", "Sarah", "Claire", "Emma", "Jane", "Alison", "Fiona"},
	},
}

// name draws a name as the patient's country gives them.
func name(r *rand.Rand, country string, male bool) (family, given string) {
	p, ok := peopleOf[country]
	if !ok {
		p = peopleOf["GB"]
	}
	given = p.female[r.IntN(len(p.female))]
	if male {
		given = p.male[r.IntN(len(p.male))]
	}
	return p.family[r.IntN(len(p.family))], given
}

// pick draws one of choices in proportion to the weights.
func pick[T any](r *rand.Rand, choices []weighted[T]) T {
	total := 0.0
	for _, c := range choices {
		total += c.w
	}
	x := r.Float64() * total
	for _, c := range choices {
		if x < c.w {
			return c.v
		}
		x -= c.w
	}
	return choices[len(choices)-1].v
}

// truncNormal draws from a normal distribution redrawn until inside [lo, hi]: ages at
// infusion by disease.
func truncNormal(mean, sd, lo, hi float64) func(*rand.Rand) float64 {
	return func(r *rand.Rand) float64 {
		for range 100 {
			if x := mean + sd*r.NormFloat64(); x >= lo && x <= hi {
				return x
			}
		}
		return math.Max(lo, math.Min(hi, mean))
	}
}

// offsetExp is a minimum plus an exponential with the given mean, capped: years from
// diagnosis to CAR-T (relapse takes time; myeloma has years of prior lines).
func offsetExp(min, mean, cap float64) func(*rand.Rand) float64 {
	return func(r *rand.Rand) float64 { return math.Min(cap, min+mean*r.ExpFloat64()) }
}

// ballAge: B-ALL CAR-T is given to children and young adults (ELIANA, ages 3–25) and,
// since brexu-cel and obe-cel, to adults.
func ballAge(r *rand.Rand) float64 {
	if r.Float64() < 0.6 {
		return truncNormal(13, 6, 3, 25)(r)
	}
	return truncNormal(45, 14, 26, 80)(r)
}

// triangular draws from the triangular distribution on [lo, hi] with its mode at mode: a visit
// day within its window, most near the target.
func triangular(r *rand.Rand, lo, mode, hi float64) float64 {
	u := r.Float64()
	if hi <= lo {
		return lo
	}
	f := (mode - lo) / (hi - lo)
	if u < f {
		return lo + math.Sqrt(u*(hi-lo)*(mode-lo))
	}
	return hi - math.Sqrt((1-u)*(hi-lo)*(hi-mode))
}

// phi is the standard normal distribution function.
func phi(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }
